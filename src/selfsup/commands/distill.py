"""``selfsup distill``: fine-tune a pre-trained encoder on a few labels, then distil it into a student.

SimCLR v2's semi-supervised recipe after pre-training (Chen et al. 2020b, Sec. 2; the library
code is :mod:`selfsup.apps.distill`)::

    selfsup distill --teacher runs/simclr2/last.ckpt --data fashion-mnist --labels-fraction 0.1 \\
        --student-backbone resnet18-tiny --epochs 10 --output runs/distill

1. **Teacher.** ``--teacher`` is a ``selfsup train`` checkpoint, an encoder file from
   ``selfsup export``, or a classifier file written by an earlier ``selfsup distill``. For the first
   two, the trunk (the method's :meth:`finetune_trunk` when it has one — SimCLR v2's backbone +
   first head layer —, otherwise its evaluation encoder) gets a zero-initialised linear layer and
   the whole network is fine-tuned on a class-balanced ``--labels-fraction`` of the training images.
   A classifier file is used as it is.
2. **Student.** A fresh ``--student-backbone`` (default: the teacher's architecture, i.e.
   self-distillation) with a linear layer learns the teacher's softened predictions
   (temperature ``--temperature``) on *all* training images, their labels unused unless
   ``--alpha`` < 1 mixes in the labelled images' cross-entropy (Eq. 3).
3. **Report.** Test top-1 of teacher and student, written to ``OUTPUT/distill.json`` and printed.

Files written to ``--output``: ``teacher.pt`` (when fine-tuned here), ``student.pt``, ``distill.json``.

The classifier file format ``selfsup-classifier/1`` — plain containers, strings, numbers and
tensors, so it loads weights-only (``selfsup.io.load_torch_file``; PyTorch's restricted unpickler)::

    {"format": "selfsup-classifier/1",
     "trunk": {"backbone": NAME, "backbone_args": {...}, "in_channels": C,
               "method": None | {"name", "args", "dataset_info", "num_samples"},
               "finetune_trunk": bool},
     "num_classes": K, "classes": [...], "image_size": S, "dataset_info": {...},
     "state_dict": <selfsup.apps.distill.Classifier state dict: trunk.* and head.*>}

``trunk.method`` is set when the trunk is built by a method (rebuilt with
``build_method(...).finetune_trunk()`` when ``finetune_trunk``, else ``.encoder()``); otherwise
the trunk is ``build_backbone(backbone, in_channels, **backbone_args)``. Inputs are the dataset's
images preprocessed by ``selfsup.transforms.eval_transform(dataset_info, image_size)``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict

import torch
from torch import Tensor

from selfsup.errors import ConfigError, DataError
from selfsup.io import atomic_write_json

if TYPE_CHECKING:  # the library code is imported when the command runs, not when the CLI starts
    from selfsup.apps.distill import Teacher


# --------------------------------------------------------------------------- the command
class _FirstView:
    """uint8 image → its one augmented view (a picklable callable for DataLoader workers)."""

    def __init__(self, transform) -> None:
        self.transform = transform

    def __call__(self, image: Tensor) -> Tensor:
        return self.transform(image)[0]


def _labels(dataset) -> Tensor:
    if dataset.labels is not None:
        return dataset.labels
    return torch.tensor([dataset[i][1] for i in range(len(dataset))], dtype=torch.int64)


def _image_size(args: argparse.Namespace, teacher: Teacher, info) -> int:
    """``--image-size``, else the teacher's (classifier file, or its pre-training views), else the data's."""
    if args.image_size:
        return args.image_size
    if teacher.classifier is not None:
        return int(teacher.classifier["image_size"])
    size = ((teacher.config or {}).get("views") or {}).get("image_size")
    return int(size) if size else info.image_size


def _check_args(args: argparse.Namespace) -> None:
    for name in ("epochs", "finetune_epochs"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 0")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size={args.batch_size} must be >= 1")
    if not 0.0 < args.labels_fraction <= 1.0:
        raise ConfigError(f"--labels-fraction={args.labels_fraction} must be in (0, 1], e.g. 0.01 or 0.1")
    if args.temperature <= 0:
        raise ConfigError(f"--temperature={args.temperature} must be > 0 (the paper: 1.0)")
    if not 0.0 <= args.alpha <= 1.0:
        raise ConfigError(f"--alpha={args.alpha} must be in [0, 1] (1 = distillation loss only)")
    for name in ("lr", "finetune_lr"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')}={getattr(args, name)} must be > 0")


def cmd_distill(args: argparse.Namespace) -> int:
    from selfsup.apps.distill import Classifier, DistillationLoss, TrainSettings, distill, fine_tune, \
        labelled_subset, load_teacher, save_classifier, top1_accuracy
    from selfsup.backbones import build_backbone
    from selfsup.config import parse_override
    from selfsup.data import load_dataset
    from selfsup.transforms import MultiViewTransform, ViewConfig, eval_transform

    _check_args(args)
    torch.manual_seed(args.seed)
    train_set = load_dataset(args.data, "train", args.data_dir)
    if train_set.info.num_classes == 0:
        raise DataError(f"dataset '{args.data}' has no labels; distillation needs a labelled subset "
                        "and a labelled test split")
    test_set = load_dataset(args.data, "test", args.data_dir)
    info = train_set.info
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)

    loaded = load_teacher(args.teacher, use_finetune_trunk=args.trunk == "auto")
    teacher, trunk_spec, payload = loaded.module, loaded.trunk_spec, loaded.classifier
    if trunk_spec["in_channels"] != info.num_channels:
        raise DataError(f"the teacher takes {trunk_spec['in_channels']}-channel images but '{args.data}' "
                        f"has {info.num_channels}")
    size = _image_size(args, loaded, info)
    train_view = _FirstView(MultiViewTransform(ViewConfig.crop_flip(image_size=size), info))
    test_view = eval_transform(info, size)
    labelled = labelled_subset(_labels(train_set), args.labels_fraction, args.seed).tolist()

    report: Dict[str, Any] = {"data": args.data, "image_size": size, "labels_fraction": args.labels_fraction,
                              "labelled_images": len(labelled), "temperature": args.temperature, "alpha": args.alpha}
    if payload is None:  # (1) fine-tune the pre-trained trunk + a linear layer on the labelled images
        teacher = Classifier(teacher, info.num_classes)
        settings = TrainSettings(epochs=args.finetune_epochs, lr=args.finetune_lr, weight_decay=0.0,
                                 batch_size=args.batch_size, num_workers=args.num_workers, device=args.device)
        history = fine_tune(teacher, train_set, labelled, train_view, settings)
        teacher_file = save_classifier(output / "teacher.pt", teacher, trunk_spec, info, size)
        report["teacher"] = {"fine_tuned": True, "finetune_epochs": args.finetune_epochs,
                             "finetune_loss": history[-1] if history else None, "file": str(teacher_file)}
    else:
        if payload["num_classes"] != info.num_classes:
            raise DataError(f"the teacher classifier has {payload['num_classes']} classes but '{args.data}' "
                            f"has {info.num_classes}")
        report["teacher"] = {"fine_tuned": False, "file": args.teacher}
    report["teacher"].update({"source": args.teacher, "backbone": trunk_spec["backbone"],
                              "trunk": "backbone + head layers" if trunk_spec.get("finetune_trunk") else "encoder",
                              "top1": top1_accuracy(teacher, test_set, test_view, device=args.device)})

    # (2) distil into a fresh student on all training images
    student_name = args.student_backbone or trunk_spec["backbone"]
    student_args: Dict[str, Any] = dict(trunk_spec["backbone_args"]) if student_name == trunk_spec["backbone"] else {}
    for item in args.student_set:
        student_args.update(parse_override(item))
    student = Classifier(build_backbone(student_name, in_channels=info.num_channels, **student_args), info.num_classes)
    settings = TrainSettings(epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay, batch_size=args.batch_size,
                             num_workers=args.num_workers, device=args.device)
    history = distill(teacher, student, train_set, train_view, settings, DistillationLoss(args.temperature, args.alpha),
                      labelled=labelled if args.alpha < 1 else None)
    student_spec = {"backbone": student_name, "backbone_args": student_args, "in_channels": info.num_channels,
                    "method": None, "finetune_trunk": False}
    student_file = save_classifier(output / "student.pt", student, student_spec, info, size)
    report["student"] = {"backbone": student_name, "backbone_args": student_args, "epochs": args.epochs,
                         "distill_loss": history[-1] if history else None, "file": str(student_file),
                         "top1": top1_accuracy(student, test_set, test_view, device=args.device)}

    # (3) report
    print(atomic_write_json(output / "distill.json", report))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "distill",
        help="fine-tune a pre-trained encoder on a few labels, then distil it into a student (SimCLR v2)",
        description="SimCLR v2's semi-supervised steps 2 and 3 (Chen et al. 2020b): fine-tune the teacher "
        "(trunk + linear layer) on a class-balanced labelled fraction, distil it into a student on all "
        "training images with the softened-prediction loss (Eq. 2), report both test top-1 accuracies.",
    )
    p.add_argument("--teacher", required=True,
                   help="a .ckpt from `selfsup train`, an encoder from `selfsup export`, "
                   "or a classifier file from `selfsup distill`")
    p.add_argument("--data", default="fashion-mnist", help="labelled dataset with train and test splits")
    p.add_argument("--data-dir")
    p.add_argument("--labels-fraction", type=float, default=0.1,
                   help="fraction of labelled training images per class (paper: 0.01, 0.1)")
    p.add_argument("--trunk", choices=("auto", "encoder"), default="auto",
                   help="auto: the method's fine-tuning trunk when it has one (SimCLR v2: backbone + first head layer); "
                   "encoder: the evaluation encoder")
    p.add_argument("--finetune-epochs", type=int, default=30,
                   help="teacher fine-tuning epochs (paper: 60 for 1%%, 30 for 10%%)")
    p.add_argument("--finetune-lr", type=float, default=0.05,
                   help="fine-tuning learning rate (SGD, Nesterov momentum, cosine)")
    p.add_argument("--student-backbone", help="student architecture (default: the teacher's, i.e. self-distillation)")
    p.add_argument("--student-set", action="append", default=[], metavar="KEY=VALUE",
                   help="student backbone option, e.g. width=0.5")
    p.add_argument("--epochs", type=int, default=10, help="distillation epochs over all training images")
    p.add_argument("--lr", type=float, default=0.1, help="student learning rate (SGD, Nesterov momentum, cosine)")
    p.add_argument("--weight-decay", type=float, default=1e-4,
                   help="student weight decay (paper: 1e-4, as in pre-training)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="τ of teacher and student softmax (Eq. 2; paper: 1)")
    p.add_argument("--alpha", type=float, default=1.0,
                   help="weight of the distillation term; < 1 adds (1-α)·labelled cross-entropy (Eq. 3)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--image-size", type=int,
                   help="input resolution (default: the teacher's pre-training size, else the data's)")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", required=True, help="folder for teacher.pt, student.pt and distill.json")
    p.set_defaults(func=cmd_distill)
