"""Full fine-tuning: the pre-trained encoder and a linear head trained end to end on labels.

The protocol of SimCLR's fine-tuning (Chen et al. 2020, App. B.5): SGD with Nesterov momentum
0.9, no warm-up, no weight decay, only random crops and horizontal flips as augmentation; the
head starts at zero. One change from the paper, common in later work (and the reason the
pre-trained weights survive small label sets): the backbone's learning rate is the head's
times ``backbone_lr_scale`` (0.1 by default), so the randomly initialised head adapts first
and the representation moves slowly. The learning rate decays with a per-step cosine.

The caller's encoder is never modified: a deep copy is trained. The global random state is
left as it was; ``seed`` fixes shuffling, augmentations and therefore the result.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from selfsup.data import ImageDataset, TensorImageDataset, TransformDataset
from selfsup.errors import ConfigError
from selfsup.evaluation.knn import topk_accuracy
from selfsup.schedules import cosine_at_step
from selfsup.transforms import BatchedMultiViewTransform, MultiViewTransform, ViewConfig, eval_transform

OPTIMIZERS = ("sgd", "adamw")


@dataclass
class FinetuneSettings:
    epochs: int = 10
    lr: float = 0.05
    """Learning rate of the head for a batch of 256, scaled linearly with ``batch_size``
    (SimCLR App. B.5: 0.05 · B / 256 with SGD; use ~1e-3 with AdamW for ViTs)."""
    backbone_lr_scale: float = 0.1
    """The backbone trains at ``lr · backbone_lr_scale``; 1.0 is SimCLR's single learning rate."""
    batch_size: int = 256
    weight_decay: float = 0.0
    """0 as in SimCLR's fine-tuning; ViT recipes use ~0.05 with AdamW."""
    optimizer: str = "sgd"
    """'sgd' (Nesterov momentum 0.9) or 'adamw'."""
    crop_scale: Tuple[float, float] = (0.5, 1.0)
    """Area range of the random resized crop (light: the images are small and the labels few)."""
    image_size: Optional[int] = None
    """Side of the training crops and test images (default: the dataset's)."""
    seed: int = 0
    device: str = "cpu"
    num_workers: int = 0

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"fine-tuning needs epochs >= 1 and batch_size >= 1, got {self.epochs} and {self.batch_size}")
        if self.lr <= 0 or self.backbone_lr_scale < 0:
            raise ConfigError(f"fine-tuning lr={self.lr} must be > 0 and backbone_lr_scale={self.backbone_lr_scale} >= 0")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown fine-tuning optimizer '{self.optimizer}'; valid: {', '.join(OPTIMIZERS)}")


@dataclass
class FinetuneResult:
    """Accuracies are fractions in [0, 1]."""

    top1: float
    top5: float
    epochs: int
    lr: float
    """The head's learning rate after batch-size scaling; the backbone's is ``lr · backbone_lr_scale``."""
    backbone_lr: float
    num_train: int
    epoch_losses: List[float] = field(default_factory=list)
    """Mean training cross-entropy of each epoch."""
    model: Optional[nn.Sequential] = field(default=None, repr=False, compare=False)
    """``Sequential(encoder copy, Linear)`` in eval mode on CPU: images ``(B, C, H, W)`` → logits ``(B, C)``."""


def _first_view(transform: MultiViewTransform) -> Callable[[Tensor], Tensor]:
    return lambda image: transform(image)[0]


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, batch_size: int = 512, device: str | torch.device = "cpu",
            num_workers: int = 0) -> Tuple[Tensor, Tensor]:
    """``(logits (N, C), labels (N,))`` of ``model`` in eval mode over a dataset of ``(image, label)``."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for images, targets in DataLoader(dataset, batch_size=batch_size, num_workers=num_workers):
        logits.append(model(images.to(device)).float().cpu())
        labels.append(torch.as_tensor(targets, dtype=torch.int64))
    model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


def finetune(
    encoder: nn.Module,
    train_set: ImageDataset,
    test_set: ImageDataset,
    settings: Optional[FinetuneSettings] = None,
    train_indices: Optional[Sequence[int]] = None,
    keep_model: bool = False,
) -> FinetuneResult:
    """Fine-tune a copy of ``encoder`` (images ``(B, C, H, W)`` → ``(B, feature_dim)``) plus a
    linear head on ``train_set`` (or its ``train_indices``), then report test accuracy.

    Args:
        encoder: the pre-trained encoder, with a ``feature_dim`` attribute; left untouched.
        train_set, test_set: labelled uint8 datasets with the same :class:`DatasetInfo`.
        settings: optimisation and augmentation (see :class:`FinetuneSettings`).
        train_indices: train only on these samples (the few-label protocol).
        keep_model: return the fine-tuned network in :attr:`FinetuneResult.model`.
    """
    settings = settings or FinetuneSettings()
    settings.validate()
    info = train_set.info
    if info.num_classes < 1:
        raise ConfigError(f"fine-tuning needs labels; dataset '{info.name}' has none")
    device = torch.device(settings.device)
    size = settings.image_size or info.image_size
    if not hasattr(encoder, "feature_dim"):
        raise ConfigError(f"fine-tuning needs an encoder with a feature_dim attribute, got {type(encoder).__name__}")
    views = ViewConfig.crop_flip(image_size=size, crop_scale=tuple(settings.crop_scale))
    augment: Optional[BatchedMultiViewTransform] = None
    train_data: Dataset = train_set
    if isinstance(train_set, TensorImageDataset):  # one image size: uint8 batches augmented on the device
        augment = BatchedMultiViewTransform(views, info).to(device)
    else:
        train_data = TransformDataset(train_set, _first_view(MultiViewTransform(views, info)))
    if train_indices is not None:
        train_data = Subset(train_data, list(train_indices))
    if len(train_data) == 0:  # type: ignore[arg-type]
        raise ConfigError("fine-tuning got an empty training set")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        backbone = copy.deepcopy(encoder).to(device).train()
        head = nn.Linear(encoder.feature_dim, info.num_classes).to(device)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        model = nn.Sequential(backbone, head)
        head_lr = settings.lr * settings.batch_size / 256  # linear scaling, as SimCLR App. B.5
        backbone_lr = head_lr * settings.backbone_lr_scale
        groups = [{"params": [p for p in backbone.parameters() if p.requires_grad], "lr": backbone_lr},
                  {"params": list(head.parameters()), "lr": head_lr}]
        if settings.optimizer == "sgd":
            optimizer: torch.optim.Optimizer = torch.optim.SGD(groups, lr=head_lr, momentum=0.9, nesterov=True,
                                                               weight_decay=settings.weight_decay)
        else:
            optimizer = torch.optim.AdamW(groups, lr=head_lr, weight_decay=settings.weight_decay)
        peak = [g["lr"] for g in optimizer.param_groups]

        loader_rng = torch.Generator().manual_seed(settings.seed)
        loader = DataLoader(train_data, batch_size=settings.batch_size, shuffle=True, drop_last=False,
                            generator=loader_rng, num_workers=settings.num_workers)
        total_steps, step = settings.epochs * len(loader), 0
        epoch_losses = []
        for _ in range(settings.epochs):
            running, seen = 0.0, 0
            for images, labels in loader:
                for group, base in zip(optimizer.param_groups, peak):  # cosine decay per step, no warm-up
                    group["lr"] = cosine_at_step(base, 0.0, step, total_steps)
                images, labels = images.to(device), torch.as_tensor(labels, dtype=torch.int64).to(device)
                if augment is not None:
                    images = augment(images)[0]
                loss = F.cross_entropy(model(images), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                running += loss.item() * len(labels)
                seen += len(labels)
                step += 1
            epoch_losses.append(running / seen)

        # Inside fork_rng: iterating a DataLoader draws a seed from the global generator.
        test_data = TransformDataset(test_set, eval_transform(info, size))
        logits, labels = predict(model, test_data, settings.batch_size, device, settings.num_workers)
    top1, top5 = topk_accuracy(logits, labels, (1, 5))
    return FinetuneResult(top1=top1, top5=top5, epochs=settings.epochs, lr=head_lr, backbone_lr=backbone_lr,
                          num_train=len(train_data), epoch_losses=epoch_losses,
                          model=model.cpu().eval() if keep_model else None)
