"""Pictures of what an encoder learned and how training went (``selfsup viz <kind>``), as PNGs.

* :func:`save_patch_pca` — patch features as colours with the background removed (DINOv2 Fig. 1).
* :func:`save_attention_maps` — last-block CLS attention per head of a ViT (DINO Fig. 3).
* :func:`tsne` + :func:`save_embedding_map` — a 2-D map of the embedding coloured by label.
* :func:`save_retrieval_grid` — each query's nearest training images.
* :func:`save_training_curves` — loss, lr, kNN / probe accuracy and RankMe from ``logs/metrics.csv``.
"""

from selfsup.viz.attention import cls_attention_maps, save_attention_maps
from selfsup.viz.curves import read_metrics, save_training_curves
from selfsup.viz.embedding import save_embedding_map, tsne
from selfsup.viz.patch_pca import patch_pca_colors, save_patch_pca
from selfsup.viz.retrieval import nearest_neighbours, save_retrieval_grid

__all__ = [
    "cls_attention_maps", "nearest_neighbours", "patch_pca_colors", "read_metrics", "save_attention_maps",
    "save_embedding_map", "save_patch_pca", "save_retrieval_grid", "save_training_curves", "tsne",
]
