"""Pretrained models: packaged names, prompt layouts (chat template, plain `Question:/Answer:`, bare).

The default suite checks the logic on `tiny-*` stand-ins, offline and without the optional extras; the
real SmolLM2 / Gemma checks are marked `slow` (`python -m pytest -q -m slow`) and skip, saying what to
install, when a model's package is missing.
"""

import importlib.util
import time

import numpy as np
import pytest
import torch
from conftest import require_packaged

from fedlada.config import LoraConfig, ModelConfig, TrainConfig
from fedlada.distill.align import nearest_ids, vocab_map
from fedlada.hosts.fedmkt import knowledge, receive
from fedlada.models import LM, load_model, train_sft
from fedlada.models.loading import GEMMA3, PACKAGED, PLAIN_TEMPLATE, SMOLLM2

torch.set_num_threads(1)

# ChatML written with the char tokenizer's own specials: <bos> opens a turn, <eos> closes it.
CHATML = ("{% for m in messages %}<bos>{{ m['role'] }}\n{{ m['content'] }}<eos>\n{% endfor %}"
          "{% if add_generation_prompt %}<bos>assistant\n{% endif %}")
PROMPTS = ["12+7=", "4821+33=", ""]
COMPLETIONS = ["2+7+0=09|#### 19", "#### 4854", "x"]


def plain_per_token_sum(lm: LM, prefix: list[int], completion: str) -> float:
    """log p(completion + eos | prefix) as a sum over one unbatched forward pass."""
    c = lm.tokenizer(completion, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[*prefix, *c, lm.eos_id]])
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(ids).logits[0].double(), -1)
    return sum(logp[t - 1, ids[0, t]].item() for t in range(len(prefix), ids.shape[1]))


def test_chat_template_prefix_and_completion_boundary_are_exact():
    lm = load_model(ModelConfig(name="tiny-llama-s"), seed=1)
    lm.tokenizer.chat_template = CHATML
    tok = lm.tokenizer
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]
    for prompt, completion, got in zip(PROMPTS, COMPLETIONS, lm.sequence_logprobs(PROMPTS, COMPLETIONS)[0]):
        prefix = [tok.bos_token_id, *ids(f"user\n{prompt}"), tok.eos_token_id, *ids("\n"), tok.bos_token_id,
                  *ids("assistant\n")]
        assert lm.prompt_ids([prompt]) == [prefix]
        assert got.item() == pytest.approx(plain_per_token_sum(lm, prefix, completion), abs=1e-4)
        with torch.no_grad():
            out = lm.model.generate(torch.tensor([prefix]), max_new_tokens=6, do_sample=False,
                                    eos_token_id=lm.eos_id, pad_token_id=lm.pad_id)
        assert lm.generate([prompt], 6) == lm.decode([out[0, len(prefix):].tolist()])


def test_presets_keep_bare_prompts():
    lm = load_model(ModelConfig(name="tiny-gpt2-s"))
    assert not lm.tokenizer.chat_template
    assert lm.prompt_ids(["12+7="]) == [[lm.bos_id, *lm.token_ids(["12+7="])[0]]]


def test_a_model_without_a_chat_template_gets_the_plain_layout(tmp_path):
    source = load_model(ModelConfig(name="tiny-llama-s"), seed=1)
    source.model.save_pretrained(tmp_path)
    source.tokenizer.save_pretrained(tmp_path)
    lm = load_model(ModelConfig(name=str(tmp_path)))
    assert lm.tokenizer.chat_template == PLAIN_TEMPLATE
    (prefix,) = lm.prompt_ids(["  Tom has 3 apples.\n"])
    assert lm.tokenizer.decode(prefix) == "<bos>Question: Tom has 3 apples.\nAnswer:\n"


def test_saves_keep_the_layout_they_were_trained_with(tmp_path):
    bare = load_model(ModelConfig(name="tiny-llama-xs"))
    bare.save(tmp_path / "bare")
    assert not LM.load(tmp_path / "bare").tokenizer.chat_template  # a checkpoint does not change layout
    bare.model.save_pretrained(tmp_path / "hf")
    bare.tokenizer.save_pretrained(tmp_path / "hf")
    plain = load_model(ModelConfig(name=str(tmp_path / "hf"), lora=LoraConfig(r=2)))
    plain.save(tmp_path / "adapters")
    again = LM.load(tmp_path / "adapters")
    assert again.tokenizer.chat_template == PLAIN_TEMPLATE
    torch.testing.assert_close(again.sequence_logprobs(PROMPTS, COMPLETIONS)[0],
                               plain.sequence_logprobs(PROMPTS, COMPLETIONS)[0], atol=1e-5, rtol=0)


def test_packaged_names_load_from_the_converted_cache(tmp_path):
    """Both packaged names resolve to `cache_dir/<name>`; once converted, no package is needed."""
    source = load_model(ModelConfig(name="tiny-llama-xs"), seed=2)
    for name in (SMOLLM2, GEMMA3):
        source.model.save_pretrained(tmp_path / name)
        source.tokenizer.save_pretrained(tmp_path / name)
        lm = load_model(ModelConfig(name=name, lora=LoraConfig(r=2)), cache_dir=tmp_path)
        assert lm.name == name and lm.base == {"name": name, "seed": 0}
        assert lm.tokenizer.chat_template == PLAIN_TEMPLATE


def test_without_a_cache_dir_packaged_models_come_from_fedlada_cache(tmp_path, monkeypatch):
    source = load_model(ModelConfig(name="tiny-llama-xs"), seed=2)
    source.model.save_pretrained(tmp_path / SMOLLM2)
    source.tokenizer.save_pretrained(tmp_path / SMOLLM2)
    monkeypatch.setenv("FEDLADA_CACHE", str(tmp_path))
    lm = load_model(ModelConfig(name=SMOLLM2))  # no cache_dir: $FEDLADA_CACHE, as for the base models
    assert lm.model.config.vocab_size == source.model.config.vocab_size
    assert torch.equal(lm.model.get_input_embeddings().weight, source.model.get_input_embeddings().weight)


@pytest.mark.parametrize("name", [SMOLLM2, GEMMA3])
def test_a_missing_package_says_how_to_install(name, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == PACKAGED[name].modules[0] else real(n, *a))
    with pytest.raises(ModuleNotFoundError, match=f"{name} needs .*pip install") as err:
        load_model(ModelConfig(name=name), cache_dir=tmp_path)
    assert (".[gemma]" in str(err.value)) == (name == GEMMA3)


# ---------------------------------------------------------------- the real models (slow)

@pytest.mark.slow
def test_gemma_from_its_packages(tmp_path):
    require_packaged(GEMMA3)
    first = load_model(ModelConfig(name=GEMMA3), cache_dir=tmp_path)  # assembles, dequantizes, caches
    assert (tmp_path / GEMMA3 / "model.safetensors").exists()
    assert type(first.model).__name__ == "Gemma3ForCausalLM" and 268_000_000 < first.num_parameters < 269_000_000
    assert len(first.tokenizer) == 262_144 and (first.tokenizer.bos_token, first.tokenizer.eos_token) == ("<bos>", "<eos>")
    assert first.tokenizer.chat_template == PLAIN_TEMPLATE  # a base model: no template of its own
    start = time.perf_counter()
    cached = load_model(ModelConfig(name=GEMMA3), cache_dir=tmp_path)
    assert time.perf_counter() - start < 10  # about a second on an idle core (docs/models.md)
    prompts, completions = ["What is 2+3?"], ["The answer is 5."]
    torch.testing.assert_close(first.sequence_logprobs(prompts, completions)[0],
                               cached.sequence_logprobs(prompts, completions)[0], atol=1e-4, rtol=0)
    assert isinstance(cached.generate(prompts, 4)[0], str)


@pytest.mark.slow
@pytest.mark.parametrize("name", [SMOLLM2, GEMMA3])
def test_real_models_train_with_and_without_lora(name, tmp_path):
    """What a server or a client does with its model: SFT steps, scoring, generation, adapter saves."""
    require_packaged(name)
    prompts, solutions = ["Tom has 3 apples and buys 4 more. How many?"] * 2, ["3 + 4 = 7\n#### 7"] * 2
    for lora in (None, LoraConfig(r=4)):
        lm = load_model(ModelConfig(name=name, lora=lora))
        before = lm.sequence_logprobs(prompts, solutions)[0]
        train_sft(lm, prompts, solutions, TrainConfig(steps=2, batch_size=2, lr=1e-4), seed=0)
        assert (lm.sequence_logprobs(prompts, solutions)[0] > before).all()
        assert len(lm.generate(prompts[:1], 3)) == 1
    lm.save(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").exists() and not (tmp_path / "model.safetensors").exists()
    torch.testing.assert_close(LM.load(tmp_path).sequence_logprobs(prompts, solutions)[0],
                               lm.sequence_logprobs(prompts, solutions)[0], atol=1e-4, rtol=0)


@pytest.mark.slow
def test_vocabulary_map_between_the_real_tokenizers(tmp_path):
    require_packaged(SMOLLM2)
    require_packaged(GEMMA3)
    smol, gemma = (load_model(ModelConfig(name=n)) for n in (SMOLLM2, GEMMA3))
    s, g = smol.vocab_strings(), gemma.vocab_strings()
    in_gemma = set(g)
    shared = [t for t in s if t in in_gemma][::97]
    assert np.array_equal(np.array(g)[nearest_ids(shared, g)], shared)  # exact matches map to themselves
    # hand-made tokens with known nearest neighbours in SmolLM2's vocabulary: one at distance 1; two at
    # distance 3 (" questionnaire" has the lower id of the two); 11,866 at distance 5, of which "1" has the lowest id
    made = nearest_ids([" photosynthesisx", "Questionnairex", " 12345"], s)
    assert [s[i] for i in made] == [" photosynthesis", " questionnaire", "1"]
    msg, _, _ = knowledge(gemma, 1, ["2+3="], ["5"], k=4, batch_size=1)
    got = receive(msg, smol, ["5"], tmp_path)
    assert got[0].ids.shape == (len(smol.token_ids(["5"])[0]) + 1, 4)
    assert np.array_equal(vocab_map(g, s, tmp_path), np.load(next((tmp_path / "vocab-maps").iterdir())))
