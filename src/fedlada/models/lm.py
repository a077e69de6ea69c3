"""`LM`: the one model object the rest of fedlada uses (a Hugging Face causal LM, its tokenizer, a device).

Everything LaDa needs from a model is text in, text out (`generate`) and teacher-forced sequence
log-probabilities of a completion given a prompt (`sequence_logprobs`). Both work on strings and on each
model's own tokenizer, so heterogeneous models never need aligned vocabularies (distill/dard.py).

Sequence layout, shared by scoring and training: `prefix(prompt) + tokens(completion) + [eos]`, with
prompt and completion tokenized separately so that no token straddles the boundary and the completion
tokens are the same whatever the prompt. The eos is scored because a model must also learn where a
reasoning path ends. Generation conditions on `prefix(prompt)`, the same prefix. The prefix is
`[bos] + tokens(prompt)` for a tokenizer without a chat template (the from-scratch presets), else the
template's rendering of the prompt as one user turn followed by the opening of the reply (the template
places bos itself): pretrained models are prompted in the layout they were tuned on
(models/loading.py gives base models a plain `Question:/Answer:` one).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from transformers import PreTrainedTokenizerBase

META_FILE = "fedlada.json"

# How `LM.generate` runs HF `generate` (`LM.generation`); "auto" is "compiled" on CUDA and "plain" elsewhere.
GENERATION_PATHS = ("auto", "plain", "static", "compiled")
# Static caches are sized up to a multiple of this, so that batches of slightly different widths share one
# cache shape (and one compiled graph) instead of compiling again for each.
CACHE_BUCKET = 128


def _chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class LM:
    """A causal LM with its tokenizer.

    `name` identifies the model (a preset name, `smollm2-135m-instruct`, a HF id) and survives save/load.
    `dtype="bfloat16"` runs forward passes under bf16 autocast while weights (and optimizer state) stay
    fp32: on CPUs with AMX and on GPUs that is 2-3x faster at a small, measured cost in precision.
    `dtype="auto"` is bf16 autocast on a CUDA device that supports bf16 and fp32 everywhere else, so one
    config runs fast on a GPU and exactly as before on the CPU.
    `generation` picks how `generate` decodes (`GENERATION_PATHS`): "plain" is HF `generate` as it is
    (a dynamic KV cache, eager forward passes); "static" preallocates a static KV cache; "compiled" adds
    HF's `torch.compile`d decoding step (CUDA graphs) on top. "auto" (the default) is "compiled" on CUDA,
    where a small model's decoding is bound by kernel launches that a compiled graph removes, and "plain"
    elsewhere, where compiling costs a minute and gains little (docs/models.md).
    `base` is set for PEFT models only: the `{"name", "seed"}` that rebuild the frozen base model, so that a
    save holds only the adapters. The model is kept in eval mode; trainers switch to train mode and back.
    """

    def __init__(self, model, tokenizer: PreTrainedTokenizerBase, *, name: str, dtype: str = "float32",
                 base: dict | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.dtype = dtype
        self.base = base
        self.generation = "auto"
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError(f"{name}: the tokenizer has no eos token, so paths could not end")
        self.eos_id = eos
        self.bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos

    def __repr__(self) -> str:
        return f"LM({self.name!r}, {self.num_parameters:,} parameters, {self.device}, {self.dtype})"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def num_parameters(self) -> int:
        """All parameters, frozen ones included (tied embeddings counted once)."""
        return sum(p.numel() for p in self.model.parameters())

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype of forward passes, None for plain fp32 (see `dtype` in the class docstring)."""
        if self.dtype == "bfloat16":
            return torch.bfloat16
        if self.dtype == "auto" and self.device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None

    def autocast(self):
        dtype = self.autocast_dtype
        return torch.autocast(self.device.type, dtype=dtype) if dtype is not None else nullcontext()

    def generation_path(self) -> str:
        """The decoding path `generate` takes now: `generation`, with "auto" resolved for this device."""
        if self.generation not in GENERATION_PATHS:
            raise ValueError(f"{self.name}: generation must be one of {GENERATION_PATHS}, not {self.generation!r}")
        if self.generation == "auto":
            return "compiled" if self.device.type == "cuda" else "plain"
        return self.generation

    def _path_options(self, path: str, width: int, max_new_tokens: int) -> dict:
        """Extra HF `generate` options of a decoding path, for a batch of prefixes `width` tokens wide.

        A static cache is sized up to a multiple of `CACHE_BUCKET` (HF keeps the largest size seen, so a
        model compiles for a handful of shapes per run). HF compiles the decoding step by itself when the
        cache is static and the device is CUDA; "compiled" on another device asks for it explicitly, which
        is how the CPU tests check that path, and "static" turns it off."""
        if path == "plain":
            return {}
        from transformers import CompileConfig

        needed = width + max_new_tokens
        size = -(-needed // CACHE_BUCKET) * CACHE_BUCKET
        if self.max_positions is not None:
            size = max(needed, min(size, self.max_positions))
        options = dict(cache_implementation="static", max_cache_len=size)
        if path == "static":
            return dict(options, disable_compile=True)
        compile_config = CompileConfig()
        compile_config._compile_all_devices = self.device.type != "cuda"  # HF's switch for compiling off CUDA
        return dict(options, compile_config=compile_config)

    @property
    def max_positions(self) -> int | None:
        """The longest sequence the model takes (its position table; GPT-2 aliases `n_positions`), or None."""
        return getattr(self.model.config, "max_position_embeddings", None)

    def prefix_lengths(self, prompts: list[str]) -> list[int]:
        """Tokens of the prefix a completion of each prompt is conditioned on (see the module docstring)."""
        return [len(ids) for ids in self.prompt_ids(prompts)]

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens per text, tokenized as completions are (no special tokens)."""
        return [len(ids) for ids in self.token_ids(texts)]

    def _check_length(self, tokens: int) -> None:
        """Fail clearly instead of inside the model (GPT-2's position table would raise an IndexError).

        The run checks its data before it starts (federation/fit.py); this catches what is made during it."""
        limit = self.max_positions
        if limit is not None and tokens > limit:
            from fedlada.errors import ContextLengthError

            raise ContextLengthError(
                f"{self.name}: a sequence of {tokens} tokens exceeds the model's {limit} positions; lower "
                "round.max_new_tokens, leave the longest examples out of the data, or use a model with more positions"
            )

    def vocab_strings(self) -> list[str]:
        """Each token id's text (special tokens as their names), for matching tokens across tokenizers."""
        if not hasattr(self, "_vocab_strings"):
            strings = [self.tokenizer.decode([i]) for i in range(len(self.tokenizer))]
            padding = max(0, self.model.config.vocab_size - len(strings))  # embedding rows past the tokenizer
            self._vocab_strings = strings + [""] * padding
        return self._vocab_strings

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        if not texts:  # HF tokenizers fail on an empty batch
            return []
        return self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]

    # ---------------------------------------------------------------- generation

    def generate(self, prompts: list[str], max_new_tokens: int, *, temperature: float = 0.0,
                 num_return_sequences: int = 1, batch_size: int = 256, seed: int | None = None) -> list[str]:
        """Completions (prompt stripped, cut at eos), `num_return_sequences` consecutive ones per prompt.

        Greedy when `temperature == 0` (the copies are then identical), else plain temperature sampling
        (no top-k / top-p), reproducible for a given `seed` and batch layout; `seed=None` draws from the
        global RNG. `batch_size` counts sequences. Prompts are sorted by length so that each batch carries
        little left padding; HF `generate` derives positions from the attention mask, which was checked
        to match unbatched generation for Llama and GPT-2 (tests/test_models_lm.py). The decoding path
        (`generation`: plain, static KV cache, compiled) is there for speed: in fp32 the greedy texts were
        checked equal across paths (tests/test_generation_paths.py, benchmarks/generation.py); under bf16
        autocast a near-tie can flip a token.
        """
        sampling = temperature > 0
        copies = num_return_sequences if sampling else 1
        prefixes = self.prompt_ids(prompts)
        order = sorted(range(len(prompts)), key=lambda i: len(prefixes[i]))
        if prefixes:
            self._check_length(len(prefixes[order[-1]]) + max_new_tokens)
        texts: list[list[str]] = [[] for _ in prompts]
        options = dict(do_sample=sampling, num_return_sequences=copies, pad_token_id=self.pad_id,
                       eos_token_id=self.eos_id, max_new_tokens=max_new_tokens)
        if sampling:
            options.update(temperature=temperature, top_k=0, top_p=1.0)
        path = self.generation_path()
        with self._seeded(seed), torch.inference_mode(), self.autocast():
            for chunk in _chunks(order, max(1, batch_size // copies)):
                width = max(len(prefixes[i]) for i in chunk)
                ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, i in enumerate(chunk):
                    ids[row, width - len(prefixes[i]):] = torch.tensor(prefixes[i])
                    mask[row, width - len(prefixes[i]):] = 1
                out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                          **options, **self._path_options(path, width, max_new_tokens))
                decoded = self.decode(out[:, width:].tolist())
                for row, i in enumerate(chunk):
                    texts[i] = decoded[row * copies : (row + 1) * copies]
        if not sampling:
            texts = [t * num_return_sequences for t in texts]
        return [t for per_prompt in texts for t in per_prompt]

    def decode(self, rows: list[list[int]]) -> list[str]:
        cut = [row[: row.index(self.eos_id)] if self.eos_id in row else row for row in rows]
        return self.tokenizer.batch_decode(cut, skip_special_tokens=True)

    @contextmanager
    def _seeded(self, seed: int | None):
        """Seed the global RNG (which HF sampling draws from) for this call only."""
        if seed is None:
            yield
            return
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            if devices:
                torch.cuda.manual_seed(seed)
            else:
                torch.default_generator.manual_seed(seed)
            yield

    # ---------------------------------------------------------------- scoring

    def prompt_ids(self, prompts: list[str]) -> list[list[int]]:
        """The prefix each completion is conditioned on (see the module docstring)."""
        if not self.tokenizer.chat_template:
            return [[self.bos_id, *ids] for ids in self.token_ids(prompts)]
        texts = [self.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                    add_generation_prompt=True) for p in prompts]
        return self.token_ids(texts)  # the rendered special tokens (bos, turn markers) are parsed back as such

    def encode_pairs(self, prompts: list[str], completions: list[str],
                      given: list[str] | None = None) -> tuple[list[torch.Tensor], list[int]]:
        """Token sequences and, per sequence, the index of its first scored token. `given[i]`, a start of
        the completion that is conditioned on but not scored, is tokenized on its own, like the prompt."""
        if len(prompts) != len(completions) or (given is not None and len(given) != len(prompts)):
            raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions"
                             + ("" if given is None else f" and {len(given)} given starts"))
        given_ids = self.token_ids(given) if given is not None else [[] for _ in prompts]
        seqs, starts = [], []
        for p, g, c in zip(self.prompt_ids(prompts), given_ids, self.token_ids(completions), strict=True):
            seqs.append(torch.tensor([*p, *g, *c, self.eos_id]))
            starts.append(len(p) + len(g))
        self._check_length(max(map(len, seqs), default=0))
        return seqs, starts

    def scored_logits(self, seqs: list[torch.Tensor], starts: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits at the scored positions of one batch (the only place that masks them): `(logits [N, V],
        labels [N], rows [N])` for the N completion tokens + eos, row-major (sequence by sequence, in order).

        Right padding with explicit positions (count of real tokens before each one) makes every row
        exactly what it would be alone, whatever the batch it shares.
        """
        device = self.device
        ids = pad_sequence(seqs, batch_first=True, padding_value=self.pad_id).to(device)
        lengths = torch.tensor([len(s) for s in seqs], device=device)
        pos = torch.arange(ids.shape[1], device=device)
        mask = (pos[None] < lengths[:, None]).long()
        position_ids = (mask.cumsum(1) - 1).clamp(min=0)
        with self.autocast():
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits
        # logits[:, t] predicts token t + 1; score the tokens from the first completion token to eos.
        nxt = pos[None, 1:]
        scored = (nxt >= torch.tensor(starts, device=device)[:, None]) & (nxt < lengths[:, None])
        rows = torch.arange(len(seqs), device=device)[:, None].expand_as(scored)[scored]
        return logits[:, :-1][scored].float(), ids[:, 1:][scored], rows

    def encoded_logprobs(self, seqs: list[torch.Tensor], starts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed completion log-probs and token counts for one batch."""
        logits, labels, rows = self.scored_logits(seqs, starts)
        token_lp = -F.cross_entropy(logits, labels, reduction="none")
        sums = torch.zeros(len(seqs), device=self.device).index_add(0, rows, token_lp)
        return sums, torch.bincount(rows, minlength=len(seqs))

    def sequence_logprobs(self, prompts: list[str], completions: list[str], *, batch_size: int = 256,
                          grad: bool = False, given: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`(sum of log p(completion tokens + eos | prompt [+ given]), number of those tokens)` per pair, on
        `device`. `given` (optional, per pair): text the completion continues, conditioned on, not scored.

        With `grad=True` the sums carry autograd (for SFT and DARD losses) and batches follow the input
        order; otherwise it runs under inference mode, batches sorted by length to limit padding.
        """
        seqs, starts = self.encode_pairs(prompts, completions, given)
        if not seqs:
            return torch.zeros(0, device=self.device), torch.zeros(0, dtype=torch.long, device=self.device)
        if grad:
            parts = [self.encoded_logprobs(seqs[i : i + batch_size], starts[i : i + batch_size])
                     for i in range(0, len(seqs), batch_size)]
            return torch.cat([s for s, _ in parts]), torch.cat([c for _, c in parts])
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        sums, counts = [], []
        with torch.inference_mode():
            for chunk in _chunks(order, batch_size):
                s, c = self.encoded_logprobs([seqs[i] for i in chunk], [starts[i] for i in chunk])
                sums.append(s)
                counts.append(c)
            restore = torch.argsort(torch.tensor(order, device=self.device))
            sums, counts = torch.cat(sums)[restore], torch.cat(counts)[restore]
        # Clones made outside inference mode are ordinary tensors, usable next to autograd ones (DARD refs).
        return sums.clone(), counts.clone()

    def loss_gradient(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        """Gradient of the mean per-token NLL of the completions w.r.t. the trainable parameters, flattened
        (one vector, on `device`). It is what one SFT step on these pairs would follow."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        logp, ntok = self.sequence_logprobs(prompts, completions, batch_size=len(prompts) or 1, grad=True)
        loss = -logp.sum() / ntok.sum().clamp(min=1)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])

    def gradient_cosines(self, prompts: list[str], completions: list[str], direction: torch.Tensor) -> np.ndarray:
        """Per pair, the cosine between its own `loss_gradient` and `direction` (LESS-style alignment:
        how much one step on this pair alone would move the model along `direction`)."""
        norm = direction.norm().clamp(min=1e-12)
        out = np.zeros(len(prompts))
        for i, (p, c) in enumerate(zip(prompts, completions)):
            g = self.loss_gradient([p], [c])
            out[i] = float(g @ direction / (g.norm().clamp(min=1e-12) * norm))
        return out

    def topk_logprobs(self, prompts: list[str], completions: list[str], k: int, *,
                      batch_size: int = 256) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Per pair, at every completion token + eos: `(label ids [T], label log-probs [T], top-k ids [T, k],
        top-k log-probs [T, k])` (numpy, CPU): the per-token knowledge logit-exchanging hosts (FedMKT) send."""
        seqs, starts = self.encode_pairs(prompts, completions)
        k = min(k, self.model.config.vocab_size)
        out = []
        with torch.inference_mode():
            for lo in range(0, len(seqs), batch_size):
                logits, labels, rows = self.scored_logits(seqs[lo : lo + batch_size], starts[lo : lo + batch_size])
                logp = torch.log_softmax(logits, -1)
                top = logp.topk(k, dim=-1)
                label_lp = logp.gather(1, labels[:, None]).squeeze(1)
                counts = torch.bincount(rows, minlength=len(seqs[lo : lo + batch_size])).tolist()
                parts = (labels, label_lp, top.indices, top.values)
                for sample in zip(*(t.split(counts) for t in parts)):
                    out.append(tuple(t.cpu().numpy() for t in sample))
        return out

    def mean_hidden(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        """Mean-pooled last hidden state of `[bos] + tokens(text)`, one row per text (float32, CPU).

        The model's own view of a question: LaDa's filter uses it for question embeddings and for
        domain affinity to the model's own data.
        """
        prefixes = [[self.bos_id, *ids] for ids in self.token_ids(texts)]
        rows = []
        with torch.inference_mode(), self.autocast():
            for start in range(0, len(prefixes), batch_size):
                chunk = [torch.tensor(p) for p in prefixes[start : start + batch_size]]
                ids = pad_sequence(chunk, batch_first=True, padding_value=self.pad_id).to(self.device)
                lengths = torch.tensor([len(c) for c in chunk], device=self.device)
                mask = (torch.arange(ids.shape[1], device=self.device)[None] < lengths[:, None]).long()
                out = self.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                                 output_hidden_states=True)
                h, m = out.hidden_states[-1].float(), mask.unsqueeze(-1).float()
                rows.append(((h * m).sum(1) / m.sum(1)).cpu().numpy())
        return np.concatenate(rows) if rows else np.zeros((0, 0))

    # ---------------------------------------------------------------- persistence

    def save(self, directory: str | Path) -> None:
        """Safetensors weights (only the adapters of a PEFT model), tokenizer and `fedlada.json`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        meta = {"name": self.name, "dtype": self.dtype, "base": self.base}
        (directory / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu", cache_dir: Path | None = None) -> LM:
        """What `save` wrote, with its dtype (same as `load_model(ModelConfig(name=str(directory)))`).

        `cache_dir` is where a packaged base model (the base of an adapter save) is converted and cached:
        the run's own, so that a resumed LoRA client reads the same copy it was trained on."""
        from fedlada.config import ModelConfig
        from fedlada.errors import CheckpointError
        from fedlada.models.loading import load_model

        directory = Path(directory)
        try:
            meta = json.loads((directory / META_FILE).read_text())
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{directory}: not a saved model ({META_FILE} is missing or unreadable: "
                                  f"{type(err).__name__})") from None
        try:
            return load_model(ModelConfig(name=str(directory), dtype=meta["dtype"]), device=device, cache_dir=cache_dir)
        except Exception as err:  # a truncated or missing weights file, a damaged tokenizer
            first = str(err).strip().splitlines()
            raise CheckpointError(f"{directory}: the saved model is damaged or incomplete ({type(err).__name__}: "
                                  f"{first[0] if first else ''})") from err

    def state_dict_cpu(self) -> dict[str, torch.Tensor]:
        """CPU copies of the trainable weights (the adapters of a PEFT model): what FedAvg averages and
        what a weight-exchanging host sends. Cheaper than a save when the model object stays alive."""
        return {k: p.detach().to("cpu", copy=True) for k, p in self.model.named_parameters() if p.requires_grad}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of `state_dict_cpu` (the same keys, exactly)."""
        params = {k: p for k, p in self.model.named_parameters() if p.requires_grad}
        if params.keys() != state.keys():
            missing, extra = params.keys() - state.keys(), state.keys() - params.keys()
            raise KeyError(f"{self.name}: state mismatch, missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]}")
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(state[k])
