"""Heads placed on top of a backbone: projectors, predictors, decoders, classifiers."""

from selfsup.heads.classifier import PatchSetClassifier
from selfsup.heads.colorization import DenseFusionHead
from selfsup.heads.cpc_context import CPCContextNetwork, RowPredictors
from selfsup.heads.decoder import ConvDecoder
from selfsup.heads.dino import DINOHead
from selfsup.heads.discriminator import ConvDiscriminator
from selfsup.heads.mlp import hidden_block, mlp_layers
from selfsup.heads.projection import ProjectionHead

__all__ = [
    "CPCContextNetwork",
    "ConvDecoder",
    "ConvDiscriminator",
    "DINOHead",
    "DenseFusionHead",
    "PatchSetClassifier",
    "ProjectionHead",
    "RowPredictors",
    "hidden_block",
    "mlp_layers",
]
