"""Throughput of the two model operations a LaDa round spends its time in, measured side by side.

    python benchmarks/bench_models.py

One CPU thread (more threads were slower on a loaded 2-core machine, FINDINGS). Random-weight models
never emit eos, so every sequence runs the full `max_new_tokens`: generation numbers are worst cases.
"""

from __future__ import annotations

import random
import time

import torch

from fedlada.config import ModelConfig
from fedlada.models import load_model

NEW_TOKENS = 60


def addition(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randrange(10, 100_000), rng.randrange(10, 100_000)
    worked = "|".join(f"{rng.randrange(10)}+{rng.randrange(10)}+{rng.randrange(2)}={rng.randrange(19):02d}"
                      for _ in range(len(str(max(a, b)))))
    # Mixed lengths, as in real scoring: answer-only paths next to worked ones.
    return f"{a}+{b}=", (worked + "|" if rng.random() < 0.5 else "") + f"#### {a + b}"


def timed(fn):
    begin = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - begin


def main() -> None:
    torch.set_num_threads(1)
    rng = random.Random(0)
    pairs = [addition(rng) for _ in range(1024)]
    prompts, completions = [p for p, _ in pairs], [c for _, c in pairs]
    lm = load_model(ModelConfig(name="tiny-llama-l"))
    print(f"{lm}, torch threads {torch.get_num_threads()}")

    _, t1 = timed(lambda: lm.generate(prompts[:8], NEW_TOKENS, batch_size=1))
    _, t256 = timed(lambda: lm.generate(prompts[:256], NEW_TOKENS, batch_size=256))
    print(f"generate  batch 1:   {8 * NEW_TOKENS / t1:8.0f} new tokens/s  (8 prompts, {t1:.1f} s)")
    print(f"generate  batch 256: {256 * NEW_TOKENS / t256:8.0f} new tokens/s  (256 prompts, {t256:.1f} s)")

    seqs, starts = lm.encode_pairs(prompts, completions)
    real = sum(len(s) for s in seqs)

    def unsorted():
        with torch.inference_mode():
            return torch.cat([lm.encoded_logprobs(seqs[i : i + 256], starts[i : i + 256])[0] for i in range(0, 1024, 256)])

    def padded(order):
        return sum(256 * max(len(seqs[i]) for i in order[j : j + 256]) for j in range(0, 1024, 256))

    by_length = sorted(range(1024), key=lambda i: len(seqs[i]))
    plain, t_unsorted = timed(unsorted)
    fast, t_sorted = timed(lambda: lm.sequence_logprobs(prompts, completions, batch_size=256)[0])
    assert torch.allclose(plain, fast, atol=1e-4)
    print(f"logprobs  unsorted:  {real / t_unsorted:8.0f} tokens/s  ({padded(list(range(1024))) / real - 1:.0%} padding, {t_unsorted:.1f} s)")
    print(f"logprobs  sorted:    {real / t_sorted:8.0f} tokens/s  ({padded(by_length) / real - 1:.0%} padding, {t_sorted:.1f} s)")

    for name in ("tiny-llama-l", "tiny-llama-s"):
        model = lm if name == lm.name else load_model(ModelConfig(name=name))
        _, t = timed(lambda: model.generate(prompts[:750], NEW_TOKENS))
        print(f"{name}: 750 prompts x {NEW_TOKENS} new tokens in {t:.1f} s ({750 * NEW_TOKENS / t:.0f} tokens/s)")


if __name__ == "__main__":
    main()
