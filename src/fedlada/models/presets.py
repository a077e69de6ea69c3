"""`tiny-*` presets: from-scratch causal LMs that train in seconds to minutes on a CPU.

Sizes follow the measured quickstart (docs/quickstart.md): `tiny-llama-m` is the server (~167k parameters;
`tiny-llama-l`, ~0.87M, trains too slowly for it on 2 CPU cores), `tiny-llama-s` / `tiny-gpt2-s` are clients
(~60k / ~88k; GPT-2's learned position table is most of the difference). Architectures and tokenizers differ across presets so that the default scenario is
heterogeneous. Embeddings are tied (the vocabulary is tiny, a second table would only add parameters)
and dropout is off (these models underfit; dropout would also make training depend on RNG state).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, PreTrainedModel, PreTrainedTokenizerFast

from fedlada.models.tokenizers import build_tokenizer
from fedlada.seeding import derive_seed

MAX_POSITIONS = 512


@dataclass(frozen=True)
class Preset:
    arch: str  # "llama" | "gpt2"
    hidden: int
    layers: int
    heads: int
    ffn: int
    tokenizer: str


PRESETS: dict[str, Preset] = {
    "tiny-llama-l": Preset("llama", 128, 4, 4, 384, "char"),
    "tiny-llama-m": Preset("llama", 64, 3, 4, 192, "char"),
    "tiny-llama-s": Preset("llama", 48, 2, 4, 128, "char"),
    "tiny-llama-xs": Preset("llama", 32, 2, 4, 96, "char"),
    "tiny-llama-s-chunk": Preset("llama", 48, 2, 4, 128, "chunk"),
    "tiny-gpt2-m": Preset("gpt2", 64, 3, 4, 256, "chunk"),
    "tiny-gpt2-s": Preset("gpt2", 48, 2, 4, 192, "chunk"),
}


def _hf_config(p: Preset, tok: PreTrainedTokenizerFast):
    ids = dict(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    if p.arch == "llama":
        return LlamaConfig(
            hidden_size=p.hidden,
            num_hidden_layers=p.layers,
            num_attention_heads=p.heads,
            num_key_value_heads=p.heads,
            intermediate_size=p.ffn,
            max_position_embeddings=MAX_POSITIONS,
            **ids,
        )
    if p.arch == "gpt2":
        return GPT2Config(
            n_embd=p.hidden,
            n_inner=p.ffn,
            n_layer=p.layers,
            n_head=p.heads,
            n_positions=MAX_POSITIONS,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **ids,
        )
    raise ValueError(f"unknown architecture {p.arch!r}")


def build_preset(name: str, seed: int) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Random init from `derive_seed(seed, name)`, without touching the caller's global RNG state."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[name]
    tok = build_tokenizer(preset.tokenizer)
    with torch.random.fork_rng(devices=[]):  # models are built on the CPU
        torch.default_generator.manual_seed(derive_seed(seed, name))
        model = AutoModelForCausalLM.from_config(_hf_config(preset, tok))
    return model, tok
