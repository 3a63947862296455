"""Classifiers of pretext tasks that look at several patches of one image at once."""

from __future__ import annotations

from torch import Tensor, nn

from selfsup.heads.mlp import hidden_block
from selfsup.heads.projection import ProjectionHead


class PatchSetClassifier(nn.Module):
    """Classifies an ordered set of ``K`` patch features, e.g. which of 8 neighbours a patch is
    (Doersch et al. 2015, Fig. 3) or which permutation shuffled 9 tiles (Noroozi & Favaro 2016, Fig. 3).

    Both papers' late-fusion design: every patch goes through the shared encoder and a shared
    fully connected layer ("fc6", here :attr:`per_patch`), the ``K`` results are concatenated in
    order, and an MLP ("fc7", "fc8") reads the concatenation. Only the concatenation can see
    where a patch came from, so the per-patch path must describe patch content.

    Args:
        feature_dim: backbone feature size ``D``.
        num_patches: ``K``.
        patch_dim: output of the shared per-patch layer (Noroozi: 512; Doersch: 4096).
        hidden_dim: width of the hidden layers after concatenation (both papers: 4096).
        num_classes: 8 neighbours, or the size of the permutation set.
        num_layers: linear layers after concatenation (>= 1; 2 in both papers).

    Shapes:
        ``(B, K, D) -> (B, num_classes)``
    """

    def __init__(self, feature_dim: int, num_patches: int, patch_dim: int, hidden_dim: int, num_classes: int,
                 num_layers: int = 2) -> None:
        super().__init__()
        self.num_patches = num_patches
        self.per_patch = nn.Sequential(*hidden_block(feature_dim, patch_dim))
        self.fused = ProjectionHead(num_patches * patch_dim, hidden_dim, num_classes, num_layers=num_layers)

    def forward(self, features: Tensor) -> Tensor:
        batch, patches, dim = features.shape
        if patches != self.num_patches:
            raise ValueError(f"expected {self.num_patches} patches per image, got features of shape {tuple(features.shape)}")
        per_patch = self.per_patch(features.reshape(batch * patches, dim))  # (B·K, patch_dim)
        return self.fused(per_patch.reshape(batch, -1))  # (B, num_classes)
