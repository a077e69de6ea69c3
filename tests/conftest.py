import importlib.util
import random

import pytest
import torch

from fedlada.config import ModelConfig, TrainConfig
from fedlada.models import load_model, train_sft
from fedlada.runner import Runner

torch.set_num_threads(1)


@pytest.fixture
def tiny_config_dict(tmp_path):
    """A federation small enough to run two rounds in seconds on one CPU thread."""
    base = {"steps": 30, "batch_size": 16, "lr": 3e-3}
    return {
        "name": "tiny",
        "seed": 0,
        "method": "distill",
        "rounds": 2,
        "data": {
            "source": "math-mix",
            "client_domains": [["add"], ["mul"]],
            "client_train": 40,
            "client_test": 12,
            "public": 60,
            "server_corpus": 60,
            "global_test_per_domain": 8,
            "math_mix": {"client_digits": [2, 2], "server_digits": [2, 3], "public_digits": [2, 3], "test_digits": [2, 3]},
        },
        "server": {"model": {"name": "tiny-llama-xs"}, "base": base},
        "clients": [
            {"model": {"name": "tiny-llama-xs"}, "base": base},
            {"model": {"name": "tiny-gpt2-s"}, "base": base},
        ],
        "round": {
            "local": {"steps": 5, "batch_size": 16},
            "transfer": {"steps": 5, "batch_size": 16},
            "candidates": 20,
            "max_new_tokens": 40,
        },
        "runtime": {"device": "cpu", "threads": 1, "eval_batch_size": 64, "cache_dir": str(tmp_path / "cache")},
    }


@pytest.fixture
def teacher_half_right(monkeypatch):
    """The tiny server's own paths are all wrong after its 30 base steps, and LaDa's down filter chooses
    among correct server paths only: here the server writes the gold solution on every other candidate
    (its own wrong path on the rest), so both directions have something to exchange."""
    from fedlada.federation.participants import Server

    generate = Server.teacher_paths

    def half_right(self, round_, pool):
        msg, stats = generate(self, round_, pool)
        gold = {e.id: e.solution for e in pool}
        for i, sid in enumerate(msg.sample_ids):
            if i % 2 == 0:
                msg.paths[i], msg.correct[i] = gold[sid], True
        return msg, {**stats, "paths/correct": sum(msg.correct) / max(1, len(msg.correct))}

    monkeypatch.setattr(Server, "teacher_paths", half_right)


class Interrupt(Exception):
    pass


def run_cut_after_round_one(cfg, out):
    """Run until round 1 has finished and been checkpointed, then stop as a crash would; then resume."""

    def stop(t, rows):
        if t == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        Runner(cfg, out).run(on_round=stop)
    return Runner(cfg, out).run(resume=True)


def require_packaged(*names: str) -> None:
    """Skip, naming the extra to install, when a packaged model's package is missing (models/loading.PACKAGED)."""
    from fedlada.models.loading import PACKAGED

    for name in names:
        if any(importlib.util.find_spec(m) is None for m in PACKAGED[name].modules):
            pytest.skip(f"optional extra for {name}: {PACKAGED[name].install}")


def addition(rng: random.Random, digits: int) -> tuple[str, str]:
    """`347+85=` -> `7+5+0=12|4+8+1=13|3+0+1=04|#### 432` (the quickstart's worked format)."""
    a, b = rng.randrange(10 ** (digits - 1), 10**digits), rng.randrange(10, 10**digits)
    da, db = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for i in range(max(len(da), len(db))):
        x, y = int(da[i]) if i < len(da) else 0, int(db[i]) if i < len(db) else 0
        steps.append(f"{x}+{y}+{carry}={x + y + carry:02d}")
        carry = (x + y + carry) // 10
    return f"{a}+{b}=", "|".join(steps) + f"|#### {a + b}"


def dataset(n: int, seed: int = 0, digits=(2, 3)) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    pairs = [addition(rng, rng.randint(*digits)) for _ in range(n)]
    return [p for p, _ in pairs], [s for _, s in pairs]


@pytest.fixture(scope="module", params=["tiny-llama-s", "tiny-gpt2-s"])
def trained(request):
    """A client-sized model after a short SFT (once per test module): it emits eos, and its outputs
    vary with the prompt, some ending at eos and some running to the limit."""
    lm = load_model(ModelConfig(name=request.param), seed=1)
    prompts, solutions = dataset(256)
    train_sft(lm, prompts, solutions, TrainConfig(steps=100, batch_size=32, lr=5e-3), seed=0)
    return lm
