"""`LM.generate`'s decoding paths (plain HF `generate`, static KV cache, compiled step) give the same texts.

The static and compiled paths are what a CUDA device runs ("auto"); no GPU was available to this project,
so they are checked here on the CPU, forced, for identical greedy outputs only (their speed is the GPU's
business: benchmarks/generation.py). The compiled path on the CPU compiles C++ kernels for about a minute,
so it is marked `slow`, as is the check on the real SmolLM2.
"""

import pytest
import torch
from conftest import dataset, require_packaged

from fedlada.config import LoraConfig, ModelConfig, TrainConfig
from fedlada.models import LM, load_model, train_sft
from fedlada.models.lm import CACHE_BUCKET
from fedlada.models.loading import SMOLLM2

torch.set_num_threads(1)


def _with(lm: LM, path: str, *args, **kw) -> list[str]:
    lm.generation = path
    try:
        return lm.generate(*args, **kw)
    finally:
        lm.generation = "auto"


def test_auto_is_plain_on_the_cpu_and_compiled_on_cuda(trained):
    assert trained.generation == "auto" and trained.generation_path() == "plain"
    assert trained._path_options("plain", 10, 40) == {}  # the CPU path passes nothing new to HF generate
    static = trained._path_options("static", 10, 40)
    assert static == {"cache_implementation": "static", "max_cache_len": CACHE_BUCKET, "disable_compile": True}
    assert trained._path_options("static", 100, 40)["max_cache_len"] == 2 * CACHE_BUCKET
    assert trained._path_options("static", 500, 10)["max_cache_len"] == 512  # capped at the positions
    assert "compile_config" in trained._path_options("compiled", 10, 40)
    trained.generation = "fast"
    with pytest.raises(ValueError, match="generation must be one of"):
        trained.generate(["1+1="], 4)
    trained.generation = "auto"


def test_static_cache_gives_the_greedy_texts_of_plain_generate(trained):
    prompts, _ = dataset(40, seed=7, digits=(2, 5))
    plain = trained.generate(prompts, 40, batch_size=16)
    static = _with(trained, "static", prompts, 40, batch_size=16)
    assert static == plain
    assert len(set(plain)) > 15 and sum("####" in t for t in plain) > 15  # varied texts, many ending at eos
    # batches of other widths reuse the cache size they fall into, with the same texts
    assert _with(trained, "static", prompts[:5], 40, batch_size=2) == plain[:5]
    # sampling runs on the static path too, seeded as on the plain one
    sampled = _with(trained, "static", prompts[:4], 30, temperature=1.0, num_return_sequences=2, seed=3)
    assert len(sampled) == 8 and sampled == _with(trained, "static", prompts[:4], 30, temperature=1.0,
                                                   num_return_sequences=2, seed=3)


def test_static_cache_with_lora_and_bf16_autocast():
    lm = load_model(ModelConfig(name="tiny-llama-s", lora=LoraConfig(r=4, alpha=8)), seed=1)
    prompts, solutions = dataset(128)
    train_sft(lm, prompts, solutions, TrainConfig(steps=40, batch_size=32, lr=1e-2), seed=0)
    test, _ = dataset(16, seed=5)
    assert _with(lm, "static", test, 30) == lm.generate(test, 30)
    lm.dtype = "auto"  # fp32 on the CPU: exactly the float32 outputs
    assert lm.autocast_dtype is None and lm.generate(test, 30) == _with(lm, "plain", test, 30)
    lm.dtype = "bfloat16"
    assert lm.autocast_dtype is torch.bfloat16
    bf16_static, bf16_plain = _with(lm, "static", test, 30), lm.generate(test, 30)
    # bf16 rounds differently over a longer (masked) cache, so a near-tie can flip a greedy token: the
    # paths agree on most texts, not all (15 of 16 here); fp32 above agrees on every one
    assert sum(a == b for a, b in zip(bf16_static, bf16_plain)) >= 12


@pytest.mark.slow
def test_compiled_step_gives_the_greedy_texts_of_plain_generate(trained):
    prompts, _ = dataset(24, seed=9, digits=(2, 5))
    assert _with(trained, "compiled", prompts, 40, batch_size=12) == trained.generate(prompts, 40, batch_size=12)
    assert hasattr(trained.model, "_compiled_call")  # HF really decoded with the compiled forward


@pytest.mark.slow
def test_static_cache_on_smollm2_gives_the_greedy_texts_of_plain_generate():
    require_packaged(SMOLLM2)
    lm = load_model(ModelConfig(name=SMOLLM2))
    prompts = ["What is 347 + 85?", "Tom has 3 apples and buys 4 more. How many apples does he have?",
               "Name the capital of France.", "Write the next number: 2, 4, 8, 16,"]
    plain = lm.generate(prompts, 24, batch_size=4)
    assert _with(lm, "static", prompts, 24, batch_size=4) == plain
    assert all(len(t) > 10 for t in plain) and len(set(plain)) == len(prompts)
