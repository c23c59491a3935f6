"""OVT training: losses, hard-view mining, the minimax loop, DDP and checkpoints (issue 5, items 3-6)."""

from ovt.train.config import TrainParams
from ovt.train.losses import itc_loss, positives_matrix, vc_loss
from ovt.train.mining import hard_views, knn_weighted_centre, mine_from_embeddings

__all__ = ["TrainParams", "itc_loss", "vc_loss", "positives_matrix", "knn_weighted_centre", "hard_views",
           "mine_from_embeddings"]
