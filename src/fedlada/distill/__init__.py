"""Domain adaptive reasoning distillation (DARD): the contrastive path loss and its pair construction."""

from fedlada.distill.dard import PathLogps, dard_loss, dard_objective
from fedlada.distill.pairs import Pair, PathRecord, build_pairs, contrast_view, local_pairs

__all__ = ["Pair", "PathLogps", "PathRecord", "build_pairs", "contrast_view", "dard_loss", "dard_objective", "local_pairs"]
