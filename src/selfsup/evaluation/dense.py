"""Dense (per-pixel) evaluation: a linear segmentation probe on frozen patch features, scored by mIoU.

The protocol of DINOv2's linear segmentation evaluation (Oquab et al. 2024, Sec. 7.4, "lin."):
the frozen encoder's patch features (ViT patch tokens after the last LayerNorm; for a ResNet the
last stage's feature map, before pooling) go through an affine-free BatchNorm and a 1×1
convolution (a linear classifier per patch); the logits are bilinearly upsampled to the mask's
resolution and trained with per-pixel cross-entropy. mIoU is the mean over classes of
``TP / (TP + FP + FN)``, with the counts summed over every test pixel (the PASCAL VOC / ADE20K
convention: one confusion matrix for the whole split, not a mean of per-image IoUs).

The data are segmentation folders (:mod:`selfsup.data.segmentation`: ``images/`` and ``masks/`` of
class-index PNGs per split, ``255`` = ignore), read with :func:`~selfsup.data.segmentation.load_segmentation`.
Images are normalised like ``folder:`` datasets and resized to ``image_size`` squares (masks with
nearest-neighbour). The number of classes is the largest class index in the training masks plus
one, unless given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import ResNet
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from selfsup.data import DatasetInfo
from selfsup.data.segmentation import IGNORE_INDEX, SegmentationFolder
from selfsup.data.segmentation import load_segmentation  # noqa: F401 (re-exported: the protocol's data reader)
from selfsup.errors import ConfigError, DataError
from selfsup.schedules import cosine_at_step


# --------------------------------------------------------------------------- features
def resnet_feature_map(net: ResNet, images: Tensor) -> Tensor:
    """The last stage's output of a torchvision ResNet, before global pooling: ``(B, C', h, w)``.

    Runs the same modules, in the same order, as ``ResNet._forward_impl`` up to ``layer4``, so
    ``net.avgpool`` of this map is ``net(images)`` (the pooled feature).
    """
    x = net.maxpool(net.relu(net.bn1(net.conv1(images))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def dense_features(encoder: nn.Module, images: Tensor) -> Tensor:
    """Spatial features of ``images (B, C, H, W)``: ``(B, D, h, w)``.

    ViTs (anything with ``forward_tokens``): the patch tokens laid back on their ``h × w`` grid.
    ResNets: :func:`resnet_feature_map`. Other encoders have no spatial output to probe.
    """
    if hasattr(encoder, "forward_tokens"):
        patches = encoder.forward_tokens(images).patches  # (B, N, D), row-major
        B, N, D = patches.shape
        patch = getattr(getattr(encoder, "patch_embed", None), "patch_size", None)
        if patch is not None:
            h, w = images.shape[-2] // patch[0], images.shape[-1] // patch[1]
        else:  # same aspect ratio as the image
            h = round(math.sqrt(N * images.shape[-2] / images.shape[-1]))
            w = N // max(1, h)
        if h * w != N:
            raise ValueError(f"cannot lay {N} patch tokens on a grid for images of {tuple(images.shape[-2:])}")
        return patches.transpose(1, 2).reshape(B, D, h, w)
    if isinstance(encoder, ResNet):
        return resnet_feature_map(encoder, images)
    raise ConfigError(f"dense evaluation needs a ViT (patch tokens) or a ResNet (feature map) encoder, "
                      f"got {type(encoder).__name__}")


def _resize_pair(image: Tensor, mask: Tensor, size: int, info: DatasetInfo) -> Tuple[Tensor, Tensor]:
    """uint8 ``(C, H, W)``, ``(H, W)`` → normalised float ``(C, S, S)``, int64 ``(S, S)``."""
    image = TF.resize(image, [size, size], antialias=True)
    image = TF.normalize(TF.to_dtype(image, torch.float32, scale=True), list(info.mean), list(info.std))
    mask = TF.resize(mask[None], [size, size], interpolation=InterpolationMode.NEAREST)[0]
    return image, mask


@torch.no_grad()
def extract_dense(encoder: nn.Module, dataset: SegmentationFolder, image_size: int, batch_size: int = 32,
                  device: str | torch.device = "cpu") -> Tuple[Tensor, Tensor]:
    """Frozen ``(features (N, D, h, w) float32, masks (N, S, S) int64)`` on CPU, encoder in eval mode."""
    modes = {m: m.training for m in encoder.modules()}
    encoder.eval()
    features, masks = [], []
    try:
        for start in range(0, len(dataset), batch_size):
            pairs = [_resize_pair(*dataset[i], image_size, dataset.info)
                     for i in range(start, min(start + batch_size, len(dataset)))]
            images = torch.stack([p[0] for p in pairs]).to(device)
            features.append(dense_features(encoder, images).float().cpu())
            masks.append(torch.stack([p[1] for p in pairs]))
    finally:
        for module, training in modes.items():
            module.train(training)
    return torch.cat(features), torch.cat(masks)


# --------------------------------------------------------------------------- metric
def confusion_matrix(predictions: Tensor, targets: Tensor, num_classes: int) -> Tensor:
    """``(C, C)`` int64 counts, row = true class, column = predicted; pixels whose target is
    :data:`IGNORE_INDEX` (or outside ``[0, C)``) are skipped."""
    targets, predictions = targets.reshape(-1).long(), predictions.reshape(-1).long()
    valid = (targets >= 0) & (targets < num_classes)
    index = targets[valid] * num_classes + predictions[valid]
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segmentation_scores(confusion: Tensor) -> Dict[str, float]:
    """``{"miou", "pixel_accuracy", "iou_<c>"...}`` from a confusion matrix (fractions).

    The mean IoU averages the classes that occur in the targets or the predictions (union > 0).
    """
    confusion = confusion.double()
    tp = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - tp
    present = union > 0
    iou = torch.where(present, tp / union.clamp(min=1), torch.zeros_like(tp))
    scores = {"miou": float(iou[present].mean()) if present.any() else 0.0,
              "pixel_accuracy": float(tp.sum() / confusion.sum().clamp(min=1))}
    scores.update({f"iou_{c}": float(iou[c]) for c in range(len(iou)) if present[c]})
    return scores


# --------------------------------------------------------------------------- probe
@dataclass
class DenseSettings:
    epochs: int = 30
    lr: float = 0.1
    """Peak SGD learning rate (momentum 0.9), cosine-decayed per step."""
    batch_size: int = 16
    """Images per step."""
    weight_decay: float = 0.0
    image_size: Optional[int] = None
    """Side of the square inputs; default: the first training image's shorter side, rounded down to
    a multiple of the ViT patch size."""
    num_classes: Optional[int] = None
    """Default: the largest class index in the training masks plus one."""
    batch_norm: bool = True
    """Affine-free BatchNorm of the features with the training set's statistics, as the linear probe."""
    seed: int = 0
    device: str = "cpu"


@dataclass
class DenseResult:
    miou: float
    pixel_accuracy: float
    per_class_iou: Dict[int, float]
    num_classes: int
    image_size: int
    feature_shape: Tuple[int, int, int]
    """``(D, h, w)`` of one image's features."""
    epochs: int
    train_losses: List[float] = field(default_factory=list)
    head: Optional[nn.Module] = field(default=None, repr=False, compare=False)
    """``BatchNorm2d(affine=False) + Conv2d(D, C, 1)``: features ``(B, D, h, w)`` → logits ``(B, C, h, w)``."""


def _default_size(encoder: nn.Module, dataset: SegmentationFolder) -> int:
    image, _ = dataset.images[0]
    size = min(image.shape[-2:])
    patch = getattr(getattr(encoder, "patch_embed", None), "patch_size", None)
    if patch is not None:
        size = max(patch[0], size // patch[0] * patch[0])
    return int(size)


def train_dense_probe(train_features: Tensor, train_masks: Tensor, num_classes: int,
                      settings: DenseSettings) -> Tuple[nn.Module, List[float]]:
    """Fit ``BatchNorm2d(affine=False) + 1×1 conv`` on frozen ``(N, D, h, w)`` features to ``(N, S, S)`` masks.

    Returns the head (eval mode, on ``settings.device``) and the mean loss of each epoch. The
    global random state is untouched: the shuffling has its own seeded generator.
    """
    device = torch.device(settings.device)
    dim = train_features.shape[1]
    norm: nn.Module = nn.Identity()
    if settings.batch_norm:
        norm = nn.BatchNorm2d(dim, affine=False, eps=1e-6)
        flat = train_features.double().transpose(0, 1).reshape(dim, -1)  # (D, N·h·w): every position is a sample
        norm.running_mean.copy_(flat.mean(1))
        norm.running_var.copy_(flat.var(1))
    norm.eval()
    conv = torch.nn.utils.skip_init(nn.Conv2d, dim, num_classes, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    head = nn.Sequential(norm, conv).to(device)
    with torch.no_grad():
        x_train = norm.to(device)(train_features.to(device))  # normalised once
    y_train = train_masks.to(device)
    optimizer = torch.optim.SGD(conv.parameters(), lr=settings.lr, momentum=0.9, weight_decay=settings.weight_decay)
    generator = torch.Generator().manual_seed(settings.seed)
    n = len(x_train)
    total_steps, step = settings.epochs * math.ceil(n / settings.batch_size), 0
    losses = []
    for _ in range(settings.epochs):
        order, running = torch.randperm(n, generator=generator).to(device), 0.0
        for start in range(0, n, settings.batch_size):
            for group in optimizer.param_groups:
                group["lr"] = cosine_at_step(settings.lr, 0.0, step, total_steps)
            idx = order[start:start + settings.batch_size]
            logits = F.interpolate(conv(x_train[idx]), size=y_train.shape[-2:], mode="bilinear", align_corners=False)
            loss = F.cross_entropy(logits, y_train[idx], ignore_index=IGNORE_INDEX)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.item() * len(idx)
            step += 1
        losses.append(running / n)
    return head.eval(), losses


@torch.no_grad()
def predict_masks(head: nn.Module, features: Tensor, size: Tuple[int, int], batch_size: int = 64) -> Tensor:
    """Per-pixel class predictions ``(N, S, S)`` of ``head`` for features ``(N, D, h, w)``."""
    device = next(head.parameters()).device
    out = []
    for start in range(0, len(features), batch_size):
        logits = head(features[start:start + batch_size].to(device))
        out.append(F.interpolate(logits, size=size, mode="bilinear", align_corners=False).argmax(1).cpu())
    return torch.cat(out)


def dense_probe(encoder: nn.Module, train_set: SegmentationFolder, test_set: SegmentationFolder,
                settings: Optional[DenseSettings] = None) -> DenseResult:
    """Train the linear segmentation probe on ``train_set``'s frozen features; mIoU on ``test_set``."""
    settings = settings or DenseSettings()
    if settings.epochs < 1 or settings.batch_size < 1 or settings.lr <= 0:
        raise ConfigError(f"dense probe needs epochs >= 1, batch_size >= 1, lr > 0; got {settings.epochs}, "
                          f"{settings.batch_size}, {settings.lr}")
    if train_set.info.num_channels != test_set.info.num_channels:
        raise DataError("train and test images of the segmentation data differ in channels (grayscale vs RGB)")
    size = settings.image_size or _default_size(encoder, train_set)
    train_x, train_y = extract_dense(encoder, train_set, size, device=settings.device)
    test_x, test_y = extract_dense(encoder, test_set, size, device=settings.device)
    labelled = train_y[train_y != IGNORE_INDEX]
    num_classes = settings.num_classes or (int(labelled.max()) + 1 if len(labelled) else 0)
    if num_classes < 2:
        raise DataError(f"segmentation masks need at least 2 classes (values 0..C-1, {IGNORE_INDEX} = ignore), "
                        f"found {num_classes}")
    if len(labelled) and int(labelled.max()) >= num_classes:
        raise DataError(f"a training mask holds class {int(labelled.max())} but num_classes={num_classes}")
    head, losses = train_dense_probe(train_x, train_y, num_classes, settings)
    predictions = predict_masks(head, test_x, tuple(test_y.shape[-2:]))
    scores = segmentation_scores(confusion_matrix(predictions, test_y, num_classes))
    per_class = {int(k[4:]): v for k, v in scores.items() if k.startswith("iou_")}
    return DenseResult(miou=scores["miou"], pixel_accuracy=scores["pixel_accuracy"], per_class_iou=per_class,
                       num_classes=num_classes, image_size=size, feature_shape=tuple(train_x.shape[1:]),
                       epochs=settings.epochs, train_losses=losses, head=head.cpu())
