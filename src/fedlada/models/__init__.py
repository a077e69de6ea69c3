"""Models: the `LM` wrapper, how configs become models, the project tokenizers and presets, SFT."""

from fedlada.models.lm import LM
from fedlada.models.loading import load_model
from fedlada.models.presets import PRESETS
from fedlada.models.tokenizers import build_tokenizer
from fedlada.models.training import make_optimizer, train_sft

__all__ = ["LM", "PRESETS", "build_tokenizer", "load_model", "make_optimizer", "train_sft"]
