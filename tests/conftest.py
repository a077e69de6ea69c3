import importlib.util

import pytest
import torch

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
