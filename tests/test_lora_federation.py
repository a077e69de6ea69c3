"""LoRA end to end: adapters only in saves, checkpoints and weight messages; FedAvg of adapters; exact resume.

A LoRA participant's frozen base is rebuilt from its name and seed, so everything that carries its
weights (a save, a checkpoint, FedCoLLM's `SendWeights` reply and `SetWeights` broadcast) holds the
adapters alone; these tests would fail if a full model slipped into any of them.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import run_cut_after_round_one
from safetensors.numpy import load_file

from fedlada.config import LoraConfig, ModelConfig, TrainConfig, config_from_dict
from fedlada.runner import Runner
from fedlada.hosts.fedcollm import TRAIN_SIZE, SendWeights, SetWeights, fedavg, on_send_weights, on_set_weights
from fedlada.models import LM, load_model, train_sft

PROMPTS = ["12+7=", "48+33=", "9*9="]
COMPLETIONS = ["2+7=9|1+0=1|#### 19", "#### 81", "#### 81"]
LORA = LoraConfig(r=4, alpha=8)


def _train(lm: LM, seed: int, steps: int = 4) -> None:
    prompts = [f"{a}+{b}=" for a in range(10) for b in range(4)]
    completions = [f"#### {a + b}" for a in range(10) for b in range(4)]
    train_sft(lm, prompts, completions, TrainConfig(steps=steps, batch_size=8, lr=1e-2), seed=seed)


def test_a_lora_save_holds_only_the_adapters_and_reloads_exactly(tmp_path):
    lm = load_model(ModelConfig(name="tiny-llama-s", lora=LORA), seed=3)
    _train(lm, seed=0)
    lm.save(tmp_path / "lora")
    saved = load_file(tmp_path / "lora" / "adapter_model.safetensors")
    assert saved and all(".lora_A." in k or ".lora_B." in k for k in saved)
    assert not (tmp_path / "lora" / "model.safetensors").exists()
    # as many numbers as the trainable ones, and a small share of the full model's file
    assert sum(v.size for v in saved.values()) == sum(v.numel() for v in lm.state_dict_cpu().values())
    full = load_model(ModelConfig(name="tiny-llama-s"), seed=3)
    full.save(tmp_path / "full")
    adapter_bytes = (tmp_path / "lora" / "adapter_model.safetensors").stat().st_size
    assert adapter_bytes < 0.25 * (tmp_path / "full" / "model.safetensors").stat().st_size
    again = LM.load(tmp_path / "lora", cache_dir=tmp_path / "cache")
    assert torch.equal(again.sequence_logprobs(PROMPTS, COMPLETIONS)[0], lm.sequence_logprobs(PROMPTS, COMPLETIONS)[0])
    assert again.generate(PROMPTS, 12) == lm.generate(PROMPTS, 12)
    # the adapters really changed the model: the base alone scores differently
    assert not torch.equal(full.sequence_logprobs(PROMPTS, COMPLETIONS)[0], lm.sequence_logprobs(PROMPTS, COMPLETIONS)[0])


def test_fedavg_of_the_adapters_of_two_clients_is_their_mean():
    """Two LoRA clients of one base model, trained apart; FedCoLLM's messages carry their adapters only,
    and the aggregate it sends back is the element-wise mean (equal training-set sizes)."""
    clients = []
    for seed in (1, 2):
        lm = load_model(ModelConfig(name="tiny-llama-xs", lora=LORA), seed=5)  # one base and start
        _train(lm, seed=seed)
        clients.append(SimpleNamespace(lm=lm, train=[None] * 30))
    replies = [on_send_weights(c, SendWeights(1)) for c in clients]
    a, b = (r.arrays for r in replies)
    assert a.keys() == b.keys() and all(".lora_A." in k or ".lora_B." in k for k in a)
    n_base = sum(p.numel() for k, p in clients[0].lm.model.named_parameters() if "lora_" not in k)
    assert sum(v.size for v in a.values()) < n_base / 4  # the message is far smaller than the model
    assert any(not np.array_equal(a[k], b[k]) for k in a)  # they trained apart
    avg = fedavg([r.arrays for r in replies], [r.values[TRAIN_SIZE] for r in replies])
    for k in a:
        np.testing.assert_allclose(avg[k], (a[k].astype(np.float64) + b[k]) / 2, rtol=1e-6, atol=1e-7)
    receiver = SimpleNamespace(lm=load_model(ModelConfig(name="tiny-llama-xs", lora=LORA), seed=5))
    on_set_weights(receiver, SetWeights(1, avg))
    got = receiver.lm.state_dict_cpu()
    assert all(np.array_equal(got[k].numpy(), avg[k]) for k in avg)
    # the aggregate is a third model: neither client's scores
    scores = [m.sequence_logprobs(PROMPTS, COMPLETIONS)[0] for m in (receiver.lm, clients[0].lm, clients[1].lm)]
    assert not torch.equal(scores[0], scores[1]) and not torch.equal(scores[0], scores[2])


def _metrics(rows):
    """What must agree between two runs: accuracies and training / distillation losses, not timings or
    the base-training loss (a resumed run reads its base models from the cache)."""
    keep = lambda k: k in ("round", "participant", "split", "accuracy") or (  # noqa: E731
        ("loss/" in k or k.startswith("kd/") or "/kd/" in k) and k != "loss/base")
    return [{k: v for k, v in r.items() if keep(k)} for r in rows]


@pytest.mark.parametrize("method", ["distill", "fedcollm"])
def test_lora_clients_checkpoint_adapters_only_and_resume_exactly(tiny_config_dict, tmp_path, method):
    base = {"steps": 30, "batch_size": 16, "lr": 1e-2}
    d = dict(tiny_config_dict, method=method)
    if method == "fedcollm":  # LoRA clients of one base model, with a common start
        d["clients"] = [{"model": {"name": "tiny-llama-xs", "init_group": "slm", "lora": LORA.model_dump()},
                         "base": base}] * 2
    else:  # heterogeneous LoRA clients
        d["clients"] = [{"model": {"name": name, "lora": LORA.model_dump()}, "base": base}
                        for name in ("tiny-llama-xs", "tiny-gpt2-s")]
    cfg = config_from_dict(d)
    full = Runner(cfg, tmp_path / "full").run()
    resumed = run_cut_after_round_one(cfg, tmp_path / "cut")
    assert _metrics(resumed) == _metrics(full)
    assert any(k.startswith("loss/") and k != "loss/base" for r in full if r["round"] == 2 for k in r)
    for run in ("full", "cut"):
        ckpt = tmp_path / run / "checkpoints" / "round-2"
        for client in ("client-0", "client-1"):
            model = ckpt / client / "model"
            assert not (model / "model.safetensors").exists()
            assert all(".lora_A." in k or ".lora_B." in k for k in load_file(model / "adapter_model.safetensors"))
    final = {r: load_file(tmp_path / r / "checkpoints" / "round-2" / "client-0" / "model" / "adapter_model.safetensors")
             for r in ("full", "cut")}
    assert all(np.array_equal(final["full"][k], final["cut"][k]) for k in final["full"])  # the same adapters
    if method == "fedcollm":
        w0, w1 = (load_file(tmp_path / "full" / "checkpoints" / "round-2" / c / "model" / "adapter_model.safetensors")
                  for c in ("client-0", "client-1"))
        assert all(np.array_equal(w0[k], w1[k]) for k in w0)  # both hold the aggregate adapters
        # both weight messages per round carry adapters only: far fewer bytes than one full model
        n_full = sum(p.numel() for p in load_model(ModelConfig(name="tiny-llama-xs")).model.parameters())
        row = next(r for r in full if r["round"] == 2 and r["participant"] == "client-0")
        assert row["bytes_sent"] < 4 * n_full / 2 and row["bytes_received"] < 4 * n_full / 2
