import math
import random

import pytest
import torch

from fedlada.config import ModelConfig, TrainConfig
from fedlada.models import load_model, make_optimizer, train_sft
from fedlada.models.training import batches, lr_factor

torch.set_num_threads(1)


def sums_dataset(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    pairs = [(rng.randrange(10, 100), rng.randrange(10, 100)) for _ in range(n)]
    return [f"{a}+{b}=" for a, b in pairs], [f"#### {a + b}" for a, b in pairs]


def mean_nll(lm, prompts, completions) -> float:
    sums, counts = lm.sequence_logprobs(prompts, completions)
    return (-sums.sum() / counts.sum()).item()


def test_sft_lowers_the_loss_and_reports_it():
    lm = load_model(ModelConfig(name="tiny-llama-s"), seed=0)
    prompts, completions = sums_dataset(64)
    before = mean_nll(lm, prompts, completions)
    assert before == pytest.approx(math.log(len(lm.tokenizer)), abs=0.3)  # random init: ~uniform
    seen = []
    stats = train_sft(lm, prompts, completions, TrainConfig(steps=30, batch_size=64, lr=1e-2), seed=0,
                      progress=lambda step, loss: seen.append((step, loss)))
    after = mean_nll(lm, prompts, completions)
    assert after < before - 2.0
    assert stats["steps"] == 30 and [s for s, _ in seen] == list(range(30))
    assert stats["loss_first"] == pytest.approx(before, abs=1e-4)  # first batch = all pairs, before any update
    assert stats["loss_last"] == pytest.approx(sum(loss for _, loss in seen[-3:]) / 3)
    assert stats["loss_last"] < stats["loss_first"] - 2.0
    assert stats["seconds"] > 0 and not lm.model.training


def test_epochs_cover_every_example_once():
    lm = load_model(ModelConfig(name="tiny-gpt2-s"), seed=0)
    prompts, completions = sums_dataset(10)
    tokens_per_epoch = int(lm.sequence_logprobs(prompts, completions)[1].sum())
    stats = train_sft(lm, prompts, completions, TrainConfig(steps=3, batch_size=10), seed=0)
    assert stats["tokens"] == 3 * tokens_per_epoch
    drawn = list(batches(10, 4, 5, torch.Generator().manual_seed(0)))
    assert [len(b) for b in drawn] == [4] * 5
    flat = [i for b in drawn for i in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))


def test_training_is_deterministic():
    prompts, completions = sums_dataset(40)
    cfg = TrainConfig(steps=8, batch_size=16, lr=5e-3)

    def run(seed):
        lm = load_model(ModelConfig(name="tiny-llama-xs"), seed=3)
        train_sft(lm, prompts, completions, cfg, seed=seed)
        return lm.state_dict_cpu()

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_zero_steps_change_nothing():
    lm = load_model(ModelConfig(name="tiny-llama-xs"))
    before = lm.state_dict_cpu()
    stats = train_sft(lm, [], [], TrainConfig(steps=0), seed=0)
    assert stats == {"loss_first": None, "loss_last": None, "steps": 0, "seconds": 0.0, "tokens": 0}
    assert all(torch.equal(before[k], v) for k, v in lm.state_dict_cpu().items())


def test_schedule_warms_up_then_decays_to_a_tenth():
    f = [lr_factor(s, steps=100, warmup=0.05) for s in range(100)]
    assert f[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert f[5] == 1.0 and all(x >= y for x, y in zip(f[5:], f[6:]))
    assert f[99] == pytest.approx(0.1, abs=0.001)
    assert lr_factor(50, steps=100, warmup=0.0) == pytest.approx(0.55)


def test_optimizer_decays_matrices_only():
    lm = load_model(ModelConfig(name="tiny-gpt2-s"))
    opt, sched = make_optimizer(lm, TrainConfig(steps=10, lr=1e-3, warmup=0.2, weight_decay=0.05))
    decay, plain = opt.param_groups
    assert decay["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decay["params"]) and all(p.ndim == 1 for p in plain["params"])
    assert len(decay["params"]) + len(plain["params"]) == len(list(lm.model.parameters()))
    assert opt.defaults["betas"] == (0.9, 0.98)
    assert decay["lr"] == pytest.approx(0.5e-3)  # step 0 of a 2-step warmup


def test_partial_batches_cover_each_epoch_once_when_there_are_fewer_items_than_a_batch():
    drawn = list(batches(3, 4, 4, torch.Generator().manual_seed(0), full=False))
    assert all(sorted(b) == [0, 1, 2] for b in drawn)  # one whole epoch per batch, no item twice
    assert [len(b) for b in batches(6, 4, 3, torch.Generator().manual_seed(0), full=False)] == [4, 4, 4]
