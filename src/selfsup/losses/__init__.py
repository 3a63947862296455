"""Losses: one small module per file, each citing the equation it implements."""

from selfsup.losses.barlow_twins import BarlowTwinsLoss
from selfsup.losses.byol import BYOLLoss
from selfsup.losses.colorization import ClassRebalancing
from selfsup.losses.cpc import CPCInfoNCELoss
from selfsup.losses.dino import TeacherCentering, dino_cross_entropy
from selfsup.losses.ibot import masked_patch_cross_entropy
from selfsup.losses.infonce import QueueInfoNCELoss, SymmetricInfoNCELoss
from selfsup.losses.koleo import koleo_loss
from selfsup.losses.nce import InstanceSoftmaxLoss, NCELoss
from selfsup.losses.negative_cosine import SymmetricNegativeCosineLoss
from selfsup.losses.ntxent import NTXentLoss
from selfsup.losses.ntxent_memory import NTXentMemoryLoss
from selfsup.losses.reconstruction import MaskedReconstructionLoss
from selfsup.losses.sinkhorn import sinkhorn_knopp
from selfsup.losses.vicreg import VICRegLoss

__all__ = [
    "BYOLLoss",
    "BarlowTwinsLoss",
    "CPCInfoNCELoss",
    "ClassRebalancing",
    "InstanceSoftmaxLoss",
    "MaskedReconstructionLoss",
    "NCELoss",
    "NTXentLoss",
    "NTXentMemoryLoss",
    "QueueInfoNCELoss",
    "SymmetricInfoNCELoss",
    "SymmetricNegativeCosineLoss",
    "TeacherCentering",
    "VICRegLoss",
    "dino_cross_entropy",
    "koleo_loss",
    "masked_patch_cross_entropy",
    "sinkhorn_knopp",
]
