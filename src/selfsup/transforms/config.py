"""One typed description of the augmented views a method trains on, with the papers' presets."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from selfsup.errors import ConfigError


@dataclass
class ViewConfig:
    """Augmentation parameters for ``num_global_views`` global crops and ``num_local_views`` local crops.

    Per-view probabilities (``blur_prob``, ``solarize_prob``) have one entry per global view, so
    asymmetric recipes (BYOL, DINO) are expressible. Sizes ``None`` follow the dataset's native size.
    """

    image_size: int | None = None  # global crop side; None -> dataset's native size
    crop_scale: tuple[float, float] = (0.08, 1.0)  # area fraction of RandomResizedCrop
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
    grayscale_prob: float = 0.2
    blur_prob: tuple[float, ...] = (0.5, 0.5)  # one per global view
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_frac: float = 0.1  # kernel side ~10% of the crop side (SimCLR, Chen et al. 2020, App. A)
    solarize_prob: tuple[float, ...] = (0.0, 0.0)  # one per global view
    num_global_views: int = 2
    num_local_views: int = 0  # DINO multi-crop (Caron et al. 2021)
    local_size: int | None = None  # None -> round(image_size * 96 / 224), DINO's ratio
    local_crop_scale: tuple[float, float] = (0.05, 0.4)
    local_blur_prob: float = 0.5  # DINO blurs local crops with p=0.5 and never solarizes them
    local_solarize_prob: float = 0.0

    def __post_init__(self) -> None:
        # YAML gives lists; tuples keep the config hashable and printable as written above.
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                setattr(self, f.name, tuple(value))

    @classmethod
    def simclr(cls, **overrides: Any) -> ViewConfig:
        """SimCLR (Chen et al. 2020, App. A): colour jitter strength s=1 -> (0.8, 0.8, 0.8, 0.2), blur p=0.5."""
        return cls._preset(dict(jitter=(0.8, 0.8, 0.8, 0.2), blur_prob=(0.5, 0.5), solarize_prob=(0.0, 0.0)),
                           overrides)

    @classmethod
    def byol(cls, **overrides: Any) -> ViewConfig:
        """BYOL (Grill et al. 2020, Table 6): asymmetric blur (1.0, 0.1) and solarization (0.0, 0.2)."""
        return cls._preset(dict(jitter=(0.4, 0.4, 0.2, 0.1), blur_prob=(1.0, 0.1), solarize_prob=(0.0, 0.2)),
                           overrides)

    @classmethod
    def dino(cls, **overrides: Any) -> ViewConfig:
        """DINO (Caron et al. 2021, main_dino.py defaults): BYOL's global views at scale (0.4, 1)
        plus 8 local crops at scale (0.05, 0.4), 96/224 of the global side."""
        return cls._preset(dict(crop_scale=(0.4, 1.0), jitter=(0.4, 0.4, 0.2, 0.1), blur_prob=(1.0, 0.1),
                                solarize_prob=(0.0, 0.2), num_local_views=8, local_crop_scale=(0.05, 0.4),
                                local_blur_prob=0.5, local_solarize_prob=0.0), overrides)

    @classmethod
    def crop_flip(cls, **overrides: Any) -> ViewConfig:
        """One lightly augmented view (random crop at scale (0.5, 1) and flip, no colour ops):
        the input of pretext tasks, which make their own targets (rotations, tiles, masks)."""
        return cls._preset(dict(num_global_views=1, crop_scale=(0.5, 1.0), jitter_prob=0.0, grayscale_prob=0.0,
                                blur_prob=(0.0,), solarize_prob=(0.0,)), overrides)

    @classmethod
    def _preset(cls, preset: dict[str, Any], overrides: dict[str, Any]) -> ViewConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"unknown view setting '{unknown[0]}'; valid settings: {', '.join(sorted(names))}")
        return cls(**{**preset, **overrides})

    def validate(self) -> None:
        """Raise ConfigError with a one-line message for the first bad value."""
        probs = {"flip_prob": self.flip_prob, "jitter_prob": self.jitter_prob,
                 "grayscale_prob": self.grayscale_prob, "local_blur_prob": self.local_blur_prob,
                 "local_solarize_prob": self.local_solarize_prob}
        probs.update({f"blur_prob[{i}]": p for i, p in enumerate(self.blur_prob)})
        probs.update({f"solarize_prob[{i}]": p for i, p in enumerate(self.solarize_prob)})
        for name, p in probs.items():
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"views.{name}={p} is not a probability; use a value in [0, 1]")
        for name in ("crop_scale", "local_crop_scale"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi <= 1.0:
                raise ConfigError(f"views.{name}=({lo}, {hi}) must satisfy 0 < min <= max <= 1")
        lo, hi = self.blur_sigma
        if not 0.0 < lo <= hi:
            raise ConfigError(f"views.blur_sigma=({lo}, {hi}) must satisfy 0 < min <= max")
        if self.num_global_views < 1 or self.num_local_views < 0:
            raise ConfigError(f"views.num_global_views={self.num_global_views} must be >= 1 and "
                              f"views.num_local_views={self.num_local_views} >= 0")
        for name in ("blur_prob", "solarize_prob"):
            if len(getattr(self, name)) != self.num_global_views:
                raise ConfigError(f"views.{name}={getattr(self, name)} needs one entry per global view "
                                  f"(num_global_views={self.num_global_views})")
        if len(self.jitter) != 4 or min(self.jitter) < 0 or self.jitter[3] > 0.5:
            raise ConfigError(f"views.jitter={self.jitter} must be 4 values (brightness, contrast, saturation, "
                              "hue) >= 0 with hue <= 0.5")
        for name in ("image_size", "local_size"):
            size = getattr(self, name)
            if size is not None and size < 1:
                raise ConfigError(f"views.{name}={size} must be a positive number of pixels or None")
        if not 0.0 < self.blur_kernel_frac <= 1.0:
            raise ConfigError(f"views.blur_kernel_frac={self.blur_kernel_frac} must be in (0, 1]")
