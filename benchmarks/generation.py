"""Greedy generation: plain HF `generate` against the project's decoding paths, side by side, same prompts.

    python benchmarks/generation.py                                   # SmolLM2 if installed, else tiny-llama-l
    python benchmarks/generation.py --model gemma-3-270m --prompts 256 --batch-size 64 --new-tokens 128
    python benchmarks/generation.py --device cuda --dtype auto        # on a GPU: bf16 autocast, compiled step

"plain HF" calls the model's `generate` directly on the prompts' prefixes (left-padded, batched as
`LM.generate` batches them); the project's paths are `LM.generate` with `LM.generation` set to `plain`,
`static` (static KV cache) and `compiled` (static cache + HF's `torch.compile`d decoding step, CUDA graphs
on CUDA). Each is run once to warm up (compiling, for `compiled`) and once timed; both times are printed.
Tokens/s counts the new tokens of the plain HF texts (up to and including eos), so equal texts give
comparable rates; it is given per wall second and per CPU second of the process (the fairer figure on a
shared CPU; on a GPU, read the wall one). It checks that every path's greedy texts equal plain HF's and prints how many do. The
`compiled` path is left out on the CPU unless `--paths` names it (it compiles C++ kernels for a minute).
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import time

import torch

from fedlada.config import ModelConfig
from fedlada.models import load_model
from fedlada.models.loading import PACKAGED, SMOLLM2
from fedlada.models.lm import LM, _chunks


def word_problems(n: int, seed: int = 0) -> list[str]:
    """Short GSM8K-like questions of varied lengths (so that batches carry left padding)."""
    rng = random.Random(seed)
    names, things = ["Tom", "Ana", "Li", "Sara", "Omar"], ["apples", "books", "coins", "stamps", "pens"]
    out = []
    for _ in range(n):
        a, b, c = rng.randrange(2, 500), rng.randrange(2, 90), rng.randrange(2, 9)
        who, what = rng.choice(names), rng.choice(things)
        q = rng.choice([
            f"What is {a} + {b}?",
            f"{who} has {a} {what} and buys {b} more. How many {what} does {who} have now?",
            f"{who} has {a} {what}, gives away {b}, then triples the rest. How many {what} are there? Think step by step.",
            f"A box holds {c} {what}. {who} fills {b} boxes and finds {a} loose {what}. How many {what} in all?",
        ])
        out.append(q)
    return out


def plain_hf(lm: LM, prompts: list[str], new_tokens: int, batch_size: int) -> tuple[list[str], int]:
    """HF `generate` as a user would call it, with `LM.generate`'s batching; also the new-token count."""
    prefixes = lm.prompt_ids(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(prefixes[i]))
    texts, tokens = [""] * len(prompts), 0
    with torch.inference_mode(), lm.autocast():
        for chunk in _chunks(order, batch_size):
            width = max(len(prefixes[i]) for i in chunk)
            ids = torch.full((len(chunk), width), lm.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, i in enumerate(chunk):
                ids[row, width - len(prefixes[i]):] = torch.tensor(prefixes[i])
                mask[row, width - len(prefixes[i]):] = 1
            out = lm.model.generate(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), do_sample=False,
                                    max_new_tokens=new_tokens, pad_token_id=lm.pad_id, eos_token_id=lm.eos_id)
            rows = out[:, width:].tolist()
            tokens += sum(row.index(lm.eos_id) + 1 if lm.eos_id in row else len(row) for row in rows)
            for row, i in zip(lm.decode(rows), chunk):
                texts[i] = row
    return texts, tokens


def timed(fn):
    """`(result, wall seconds, CPU seconds of this process)`: on a shared CPU the wall time depends on the
    other jobs, the process's own CPU time much less."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    begin, cpu = time.perf_counter(), time.process_time()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - begin, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    have_smollm2 = all(importlib.util.find_spec(m) is not None for m in PACKAGED[SMOLLM2].modules)
    parser.add_argument("--model", default=SMOLLM2 if have_smollm2 else "tiny-llama-l")
    parser.add_argument("--device", default="auto", help="auto = cuda when available, else cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "auto"])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--paths", default=None, help="comma-separated project paths (default: plain,static and, "
                        "on CUDA, compiled)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device)
    paths = args.paths.split(",") if args.paths else ["plain", "static"] + (["compiled"] if device == "cuda" else [])

    lm = load_model(ModelConfig(name=args.model, dtype=args.dtype), device=device)
    where = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{lm}; {where}; autocast {lm.autocast_dtype}; {args.prompts} prompts, batch {args.batch_size}, "
          f"up to {args.new_tokens} new tokens, greedy")
    prompts = word_problems(args.prompts)

    _, warm, _ = timed(lambda: plain_hf(lm, prompts, args.new_tokens, args.batch_size))
    (reference, tokens), seconds, cpu = timed(lambda: plain_hf(lm, prompts, args.new_tokens, args.batch_size))
    print(f"{'path':<18} {'tokens/s':>10} {'per CPU s':>10} {'timed s':>9} {'first run s':>12} {'same texts':>11}")
    print(f"{'plain HF generate':<18} {tokens / seconds:10.1f} {tokens / cpu:10.1f} {seconds:9.2f} {warm:12.2f} {'-':>11}")
    failures = 0
    for path in paths:
        lm.generation = path
        run = lambda: lm.generate(prompts, args.new_tokens, batch_size=args.batch_size)  # noqa: E731
        _, warm, _ = timed(run)
        texts, seconds, cpu = timed(run)
        same = sum(a == b for a, b in zip(texts, reference))
        failures += same != len(prompts)
        print(f"{'project ' + path:<18} {tokens / seconds:10.1f} {tokens / cpu:10.1f} {seconds:9.2f} {warm:12.2f} "
              f"{same:>5}/{len(prompts):<5}")
    lm.generation = "auto"
    print(f"{tokens} new tokens; e.g. {prompts[0]!r} -> {reference[0]!r}")
    if failures:
        raise SystemExit(f"{failures} path(s) gave greedy texts that differ from plain HF generate")


if __name__ == "__main__":
    main()
