"""Fine-tuning and self-distillation, the last two steps of SimCLR v2's semi-supervised recipe.

Chen, Kornblith, Swersky, Norouzi, Hinton, "Big Self-Supervised Models are Strong
Semi-Supervised Learners" (NeurIPS 2020), Sec. 2:

1. a pre-trained trunk plus a linear layer is fine-tuned on the few labelled images
   (:func:`fine_tune`; for SimCLR v2 the trunk includes the head's first layer);
2. the fine-tuned network, frozen, is the teacher of a student trained on the unlabelled images
   to match its softened predictions (:func:`distill`), with the loss of Eq. 2::

       L_distill = − Σ_x Σ_y P_T(y | x; τ) log P_S(y | x; τ),   P(y | x; τ) = softmax(f(x) / τ)_y

   The same temperature τ softens teacher and student (the paper uses τ = 1). With labels, Eq. 3
   mixes in the ordinary cross-entropy of the labelled images: ``(1 − α)·L_label + α·L_distill``.

Plain PyTorch: models, data loaders and loops, and the classifier files (``selfsup-classifier/1``,
described in :mod:`selfsup.commands.distill`) with the teachers they can be read from
(:func:`load_teacher`); ``selfsup distill`` (:mod:`selfsup.commands.distill`) is the command line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from selfsup.data import UNLABELED, ImageDataset, TransformDataset
from selfsup.errors import ConfigError, DataError
from selfsup.evaluation import extract_features, topk_accuracy
from selfsup.io import atomic_torch_save, load_torch_file
from selfsup.schedules import cosine_at_step


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Eq. 2 averaged over the batch: ``−mean_x Σ_y softmax(t/τ)_y · log_softmax(s/τ)_y``.

    Args:
        student_logits: ``(B, C)``, with gradient.
        teacher_logits: ``(B, C)``; treated as constants (detached).
        temperature: τ > 0, applied to both.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(f"expected two (B, C) logits of equal shape, got {tuple(student_logits.shape)} "
                         f"and {tuple(teacher_logits.shape)}")
    targets = F.softmax(teacher_logits.detach().float() / temperature, dim=1)
    return -(targets * F.log_softmax(student_logits.float() / temperature, dim=1)).sum(dim=1).mean()


class DistillationLoss(nn.Module):
    """Eq. 3: ``(1 − α)·CE(student, labels) + α·L_distill`` (α = 1: distillation alone, Eq. 2).

    Args:
        temperature: τ of both softmaxes in ``L_distill``.
        alpha: weight α of the distillation term; the labelled term uses the rows whose label is
            not ``-1`` (unlabelled images only count in ``L_distill``).

    Shapes:
        ``student (B, C)``, ``teacher (B, C)``, ``labels (B,)`` or None → scalar.
    """

    def __init__(self, temperature: float = 1.0, alpha: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.temperature = temperature
        self.alpha = alpha

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        loss = self.alpha * distillation_loss(student_logits, teacher_logits, self.temperature)
        if self.alpha < 1.0 and labels is not None:
            labelled = labels != UNLABELED
            if labelled.any():
                loss = loss + (1.0 - self.alpha) * F.cross_entropy(student_logits[labelled].float(), labels[labelled])
        return loss


class Classifier(nn.Module):
    """A trunk (images → ``(B, D)`` features, with ``feature_dim``) and a linear layer → ``(B, C)`` logits.

    The linear layer starts at zero, as SimCLR's fine-tuning does (``zero_init_logits_layer``):
    every class starts equally likely and the trunk's first gradients are not random.
    """

    def __init__(self, trunk: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(trunk.feature_dim, num_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.num_classes = num_classes

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.trunk(images))


def labelled_subset(labels: Tensor, fraction: float, seed: int = 0) -> Tensor:
    """Indices of a class-balanced random ``fraction`` of the labelled images (at least one per class).

    Args:
        labels: ``(N,)`` int64, ``-1`` for unlabelled images (never chosen).
    Returns:
        ``(M,)`` sorted indices.
    """
    if not 0.0 < fraction <= 1.0:
        raise DataError(f"labels fraction {fraction} must be in (0, 1], e.g. 0.01 or 0.1")
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in labels[labels != UNLABELED].unique().tolist():
        members = (labels == label).nonzero()[:, 0]
        count = max(1, round(fraction * len(members)))
        chosen.append(members[torch.randperm(len(members), generator=generator)[:count]])
    if not chosen:
        raise DataError("the dataset has no labelled images to fine-tune on")
    return torch.cat(chosen).sort().values


class _Subset(Dataset):
    """Images ``indices`` of ``dataset``; labels outside ``labelled`` (when given) read as -1."""

    def __init__(self, dataset: Dataset, indices: Optional[Sequence[int]] = None,
                 labelled: Optional[Iterable[int]] = None) -> None:
        self.dataset = dataset
        self.info = dataset.info  # type: ignore[attr-defined]
        self.indices = list(range(len(dataset))) if indices is None else list(indices)  # type: ignore[arg-type]
        self.labelled = None if labelled is None else set(labelled)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Tuple[Tensor, int]:
        index = self.indices[i]
        image, label = self.dataset[index]
        if self.labelled is not None and index not in self.labelled:
            label = UNLABELED
        return image, label


@dataclass
class TrainSettings:
    """SGD with momentum 0.9 (Nesterov) and a per-step cosine learning rate, as for fine-tuning
    in SimCLR's code (``optimizer=momentum``), without warm-up (SimCLR v2 drops it for fine-tuning)."""

    epochs: int = 10
    lr: float = 0.05
    weight_decay: float = 0.0
    batch_size: int = 256
    num_workers: int = 0
    device: Union[str, torch.device] = "cpu"


def _train(model: nn.Module, dataset: Dataset, settings: TrainSettings,
           step_loss: Callable[[Tensor, Tensor], Tensor]) -> List[float]:
    """Run ``settings.epochs`` epochs of SGD on ``model``'s trainable parameters; return the
    mean loss of each epoch. ``step_loss(images, labels)`` computes the loss of a batch."""
    loader = DataLoader(dataset, batch_size=settings.batch_size, shuffle=True, drop_last=len(dataset) > settings.batch_size,
                        num_workers=settings.num_workers)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=settings.lr, momentum=0.9, nesterov=True, weight_decay=settings.weight_decay)
    total, step, history = settings.epochs * len(loader), 0, []
    model.train()
    for _ in range(settings.epochs):
        losses = []
        for images, labels in loader:
            for group in optimizer.param_groups:  # cosine decay per step (Loshchilov & Hutter 2017)
                group["lr"] = cosine_at_step(settings.lr, 0.0, step, max(1, total))
            loss = step_loss(images.to(settings.device), torch.as_tensor(labels).to(settings.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
        history.append(sum(losses) / max(1, len(losses)))
    model.eval()
    return history


def fine_tune(classifier: Classifier, dataset: ImageDataset, indices: Sequence[int],
              transform: Callable[[Tensor], Tensor], settings: TrainSettings) -> List[float]:
    """Fine-tune the whole ``classifier`` (trunk and linear layer) with cross-entropy on the
    images ``indices`` of ``dataset``, augmented by ``transform`` (uint8 image → float tensor).

    Returns the mean loss per epoch.
    """
    data = TransformDataset(_Subset(dataset, indices), transform)  # type: ignore[arg-type]
    classifier.to(settings.device)
    return _train(classifier, data, settings, lambda x, y: F.cross_entropy(classifier(x), y))


def distill(teacher: nn.Module, student: nn.Module, dataset: ImageDataset, transform: Callable[[Tensor], Tensor],
            settings: TrainSettings, loss: DistillationLoss, labelled: Optional[Iterable[int]] = None) -> List[float]:
    """Train ``student`` on every image of ``dataset`` to match the frozen ``teacher`` (Eq. 2/3).

    Teacher and student see the same augmented image; the teacher runs in eval mode without
    gradient. Labels are used only when ``loss.alpha < 1`` and only for the images in
    ``labelled`` (default: none, i.e. the training set is treated as unlabelled).
    """
    teacher.to(settings.device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student.to(settings.device)
    data = TransformDataset(_Subset(dataset, labelled=labelled if labelled is not None else ()), transform)

    def step_loss(images: Tensor, labels: Tensor) -> Tensor:
        with torch.no_grad():
            teacher_logits = teacher(images)
        return loss(student(images), teacher_logits, labels)

    return _train(student, data, settings, step_loss)


def top1_accuracy(classifier: nn.Module, dataset: ImageDataset, transform: Callable[[Tensor], Tensor],
                  batch_size: int = 512, device: Union[str, torch.device] = "cpu") -> float:
    """Top-1 accuracy (a fraction) of ``classifier`` on ``dataset`` preprocessed by ``transform``."""
    logits, labels = extract_features(classifier.to(device), TransformDataset(dataset, transform),
                                      batch_size=batch_size, device=device)
    return topk_accuracy(logits, labels, (1,))[0]


# --------------------------------------------------------------------------- classifier files and teachers
CLASSIFIER_FORMAT = "selfsup-classifier/1"
_METHOD_PREFIX = "method."


def _dataset_info(values: Dict[str, Any]):
    from selfsup.data import DatasetInfo

    return DatasetInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def build_trunk(spec: Dict[str, Any]) -> nn.Module:
    """The (randomly initialised) trunk described by a classifier file's ``trunk`` entry."""
    from selfsup.backbones import build_backbone
    from selfsup.methods import DataSpec, build_backbone_for, build_method

    method = spec.get("method")
    if method is None:
        return build_backbone(spec["backbone"], in_channels=spec["in_channels"], **spec["backbone_args"])
    info = _dataset_info(method["dataset_info"])
    backbone = build_backbone_for(method["name"], spec["backbone"], spec["backbone_args"], info.num_channels,
                                  method["args"])
    built = build_method(method["name"], backbone, method["args"], DataSpec(info, method.get("num_samples", 0)))
    return built.finetune_trunk() if spec.get("finetune_trunk") else built.encoder()


@dataclasses.dataclass
class Teacher:
    """What ``--teacher`` holds."""

    module: nn.Module
    """A ready :class:`Classifier` (classifier file), or a pre-trained trunk
    ``(B, C, H, W) → (B, D)``."""
    trunk_spec: Dict[str, Any]
    """How to rebuild the trunk: the ``trunk`` entry of the classifier format."""
    classifier: Optional[Dict[str, Any]] = None
    """The classifier file's payload, when ``--teacher`` is one."""
    config: Optional[Dict[str, Any]] = None
    """The pre-training config, when known (its ``views.image_size`` is the default resolution)."""


def _trunk_from_training_checkpoint(stored: Dict[str, Any], use_finetune_trunk: bool) -> Teacher:
    from selfsup.methods import DataSpec, build_backbone_for, build_method

    meta = stored["selfsup"]
    config = meta["config"]
    method_spec = {"name": config["method"], "args": config["method_args"], "dataset_info": meta["dataset_info"],
                   "num_samples": meta.get("num_samples", 0)}
    info = _dataset_info(meta["dataset_info"])
    backbone = build_backbone_for(config["method"], config["backbone"], config["backbone_args"], info.num_channels,
                                  config["method_args"])
    method = build_method(config["method"], backbone, config["method_args"], DataSpec(info, method_spec["num_samples"]))
    method.load_state_dict({k[len(_METHOD_PREFIX):]: v for k, v in stored["state_dict"].items()
                            if k.startswith(_METHOD_PREFIX)})
    finetune = use_finetune_trunk and hasattr(method, "finetune_trunk")
    trunk = method.finetune_trunk() if finetune else method.encoder()
    # in_channels: what the trunk reads, i.e. the dataset's images (the backbone may read fewer).
    spec = {"backbone": config["backbone"], "backbone_args": dict(config["backbone_args"]),
            "in_channels": info.num_channels, "method": method_spec, "finetune_trunk": finetune}
    return Teacher(trunk, spec, config=config)


def load_teacher(path: str, use_finetune_trunk: bool = True) -> Teacher:
    """Read ``--teacher``: a classifier file, an exported encoder or a training checkpoint.

    ``use_finetune_trunk``: for a training checkpoint of a method with ``finetune_trunk()``
    (SimCLR v2), take that trunk instead of the evaluation encoder.
    """
    from selfsup.evaluation import load_encoder
    from selfsup.evaluation.load import ENCODER_FORMAT

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"teacher '{path}' does not exist (give a .ckpt from `selfsup train`, a file from "
                          "`selfsup export`, or a classifier file from `selfsup distill`)")
    stored = load_torch_file(file, "a selfsup checkpoint, exported encoder or classifier file")
    if isinstance(stored, dict) and stored.get("format") == CLASSIFIER_FORMAT:
        classifier = Classifier(build_trunk(stored["trunk"]), stored["num_classes"])
        classifier.load_state_dict(stored["state_dict"])
        return Teacher(classifier, stored["trunk"], classifier=stored)
    if isinstance(stored, dict) and stored.get("format") == ENCODER_FORMAT:
        loaded = load_encoder(str(file))
        spec = {"backbone": loaded.backbone, "backbone_args": dict(loaded.backbone_args),
                "in_channels": loaded.in_channels, "method": loaded.method, "finetune_trunk": False}
        return Teacher(loaded.encoder, spec, config=loaded.config)
    if isinstance(stored, dict) and "selfsup" in stored and "state_dict" in stored:
        return _trunk_from_training_checkpoint(stored, use_finetune_trunk)
    raise ConfigError(f"teacher '{path}' is neither a selfsup training checkpoint, an exported encoder "
                      f"({ENCODER_FORMAT}) nor a classifier file ({CLASSIFIER_FORMAT})")


def save_classifier(path: Path, classifier: nn.Module, trunk_spec: Dict[str, Any], info, image_size: int) -> Path:
    """Write a ``selfsup-classifier/1`` file (its layout: :mod:`selfsup.commands.distill`)."""
    payload = {"format": CLASSIFIER_FORMAT, "trunk": trunk_spec, "num_classes": classifier.num_classes,
               "classes": list(info.classes), "image_size": image_size, "dataset_info": dataclasses.asdict(info),
               "state_dict": classifier.state_dict()}
    atomic_torch_save(payload, path)
    return path
