"""Backbones: encoders ``(B, C, H, W) → (B, feature_dim)`` reachable by name.

Example:
    >>> from selfsup.backbones import BACKBONES, build_backbone
    >>> BACKBONES.names()
    ['resnet18', 'resnet18-tiny', 'resnet34', 'resnet50', 'timm:NAME', 'vit-base', 'vit-small', 'vit-tiny']
    >>> net = build_backbone("resnet18-tiny", in_channels=1)
    >>> net.feature_dim
    128
    >>> build_backbone("timm:convnext_atto", in_channels=1).feature_dim   # any timm model, no download
    320
"""

from selfsup.backbones.base import BACKBONES, Backbone, backbone_kwargs, build_backbone
from selfsup.backbones.resnet import ResNetBackbone
from selfsup.backbones.timm import TIMM_PREFIX, TimmBackbone, TimmVisionTransformerBackbone
from selfsup.backbones.vit import TokenFeatures, VisionTransformerBackbone

__all__ = [
    "BACKBONES",
    "Backbone",
    "ResNetBackbone",
    "TIMM_PREFIX",
    "TimmBackbone",
    "TimmVisionTransformerBackbone",
    "TokenFeatures",
    "VisionTransformerBackbone",
    "backbone_kwargs",
    "build_backbone",
]
