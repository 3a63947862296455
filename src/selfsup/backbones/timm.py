"""Any timm model as a backbone: ``timm:<name>`` (``timm:convnext_tiny``, ``timm:resnet50d``,
``timm:vit_small_patch16_224`` …), built with ``pretrained=False`` (nothing is downloaded).

timm's ``num_classes=0`` removes the classifier, so the model returns its pooled features
(``num_features``, or ``head_hidden_size`` for models with a pre-logits layer). timm's
``VisionTransformer`` family (ViT, DeiT, ViTs with register tokens …) also gets what the
masked-token methods need, as the built-in ``vit-*`` backbones have it: ``forward_tokens(x, mask)``
with an iBOT mask token, ``patch_embed``, and ``get_last_attention``. Other models give pooled
features only, and iBOT/DINOv2 refuse them with a one-line error.
"""

from __future__ import annotations

import difflib
from typing import Any, Dict, Optional, Set

import torch
from torch import Tensor, nn

from selfsup.backbones.base import BACKBONES, Backbone
from selfsup.backbones.vit import TokenFeatures, vit_forward_tokens, vit_last_attention
from selfsup.errors import ConfigError

TIMM_PREFIX = "timm:"
# Arguments selfsup sets itself: the classifier is removed and weights are never downloaded.
_RESERVED_ARGS = ("pretrained", "num_classes", "in_chans", "img_size", "drop_path_rate", "pretrained_cfg")


class TimmBackbone(Backbone):
    """A timm model without its classifier; ``forward`` returns timm's pooled features ``(B, D)``.

    Attributes:
        model: the timm model (its state-dict keys, below ``model.``, are timm's own).
        model_name: the timm architecture, e.g. ``"convnext_atto"``.
        create_args: the keyword arguments ``timm.create_model`` got besides ``pretrained``,
            so the same model can be rebuilt in plain timm (:mod:`selfsup.export`).
    """

    def __init__(self, model: nn.Module, model_name: str, create_args: Dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.model_name = model_name
        self.create_args = dict(create_args)
        self.feature_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)

    def forward(self, x: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` → pooled features ``(B, feature_dim)``."""
        return self.model(x)


class TimmVisionTransformerBackbone(TimmBackbone):
    """A timm ``VisionTransformer`` plus an iBOT-style mask token and token-level outputs."""

    def __init__(self, model: nn.Module, model_name: str, create_args: Dict[str, Any]) -> None:
        super().__init__(model, model_name, create_args)
        # (D,) learned embedding of a masked patch; iBOT initialises it to zeros.
        self.mask_token = nn.Parameter(torch.zeros(model.embed_dim))

    @property
    def patch_embed(self) -> nn.Module:
        """timm's patch embedding (methods read its ``patch_size`` and freeze its ``proj``)."""
        return self.model.patch_embed

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        """timm's token-like parameters (position embedding, CLS token) and the mask token."""
        return {f"model.{name}" for name in self.model.no_weight_decay()} | {"mask_token"}

    def forward_tokens(self, x: Tensor, mask: Optional[Tensor] = None) -> TokenFeatures:
        """Pooled token ``(B, D)`` (equal to :meth:`forward`) and patch tokens ``(B, N, D)``;
        ``mask (B, N)`` True replaces those patches' embeddings by ``mask_token``."""
        return vit_forward_tokens(self.model, x, mask, self.mask_token)

    def get_last_attention(self, x: Tensor) -> Tensor:
        """Attention probabilities of the last block, ``(B, heads, T, T)``; row 0 is the CLS query."""
        return vit_last_attention(self.model, x)


@BACKBONES.register(f"{TIMM_PREFIX}NAME")
def timm_backbone(model_name: str, in_channels: int = 3, image_size: Optional[int] = None,
                  drop_path_rate: float = 0.0, model_args: Optional[Dict[str, Any]] = None) -> TimmBackbone:
    """Any timm model by name (timm:convnext_tiny, timm:vit_small_patch16_224 …; no downloads); timm ViTs also give patch tokens and masks (iBOT, DINOv2).

    ``image_size`` sets ``img_size`` of models built for one resolution (ViTs; convolutional
    models take any size and refuse it); ``model_args`` passes further ``timm.create_model``
    keyword arguments, e.g. ``{global_pool: avg}``.
    """
    import timm
    from timm.models.vision_transformer import VisionTransformer

    if not timm.is_model(model_name):
        close = difflib.get_close_matches(model_name, timm.list_models(), n=3)
        hint = f"did you mean {', '.join(TIMM_PREFIX + c for c in close)}?" if close else \
            "list them with python -c \"import timm; print(timm.list_models('*convnext*'))\""
        raise ConfigError(f"unknown timm model '{model_name}'; {hint}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ConfigError(f"image_size={image_size!r} must be a positive integer (the side the model is built for)")
    if not 0.0 <= drop_path_rate < 1.0:
        raise ConfigError(f"drop_path_rate={drop_path_rate!r} must be in [0, 1) (DINO uses 0.1)")
    extra = dict(model_args) if isinstance(model_args, dict) else {}
    if (model_args is not None and not isinstance(model_args, dict)) or set(extra) & set(_RESERVED_ARGS):
        raise ConfigError(f"model_args={model_args!r} must be a mapping of timm.create_model arguments other than "
                          f"{', '.join(_RESERVED_ARGS)} (set by selfsup or by in_channels/image_size/drop_path_rate)")
    create_args: Dict[str, Any] = {"num_classes": 0, "in_chans": in_channels, **extra}
    if image_size is not None:
        create_args["img_size"] = image_size
    if drop_path_rate > 0:
        create_args["drop_path_rate"] = drop_path_rate
    if _defined_in_vision_transformer(model_name):
        # Position embeddings interpolated for other sizes (DINO's local crops), tokens kept NHWC
        # until the mask token is applied, as for the built-in ViTs.
        create_args.setdefault("dynamic_img_size", True)
    model = _create(model_name, create_args)
    if isinstance(model, VisionTransformer) and "dynamic_img_size" not in create_args:
        create_args["dynamic_img_size"] = True  # a VisionTransformer defined elsewhere (DeiT …): build it again
        model = _create(model_name, create_args)
    cls = TimmVisionTransformerBackbone if isinstance(model, VisionTransformer) else TimmBackbone
    return cls(model, model_name, create_args)


def _create(model_name: str, create_args: Dict[str, Any]) -> nn.Module:
    import timm

    try:
        return timm.create_model(model_name, pretrained=False, **create_args)
    except TypeError as err:
        if "img_size" in str(err):
            raise ConfigError(f"timm model '{model_name}' has no image size to set (convolutional models take any "
                              f"size); drop image_size") from err
        raise ConfigError(f"timm model '{model_name}' refused its arguments {create_args}: {err}") from err


def _defined_in_vision_transformer(model_name: str) -> bool:
    """Whether timm's entrypoint for ``model_name`` lives in ``vision_transformer.py`` (builds a ViT)."""
    import timm.models

    return timm.models.model_entrypoint(model_name).__module__.endswith(".vision_transformer")
