"""Data that does not fit the models, found before anything trains or is written.

Without this check a sequence longer than a model's position table stops the run where that model
first meets it: after the server's base training (minutes) at the earliest, with a half-written run
directory. The check covers what every run is sure to do with its data, for every participant:

- base training and every local step on its own training set: the prompt's prefix, the solution
  and eos (the layout of `models/lm.py`, in the participant's tokenizer);
- generation on its test sets (evaluation, every round) and on the public set (paths, pairs): the
  prompt's prefix and `round.max_new_tokens`.

Sequences made during the run (a path scored in another model's tokenizer) are checked where they
are made (`LM._check_length`), with the same kind of one-line error.
"""

from __future__ import annotations

from pathlib import Path

from fedlada.config import ModelConfig, RunConfig, default_cache_dir
from fedlada.data import build_federation_data
from fedlada.data.files import DataFileError
from fedlada.data.partition import FederationData
from fedlada.data.types import Example
from fedlada.errors import ContextLengthError, DataError


def _model(cfg: ModelConfig, cache_dir: Path):
    """The participant's model as its run loads it (the tokenizer and position table are what count;
    the weights are thrown away). LoRA adapters change neither, so they are not built."""
    from fedlada.models import load_model

    return load_model(cfg.model_copy(update={"lora": None}), cache_dir=cache_dir)


def _longest(counts: list[int], examples: list[Example]) -> tuple[int, Example | None]:
    return max(zip(counts, examples), key=lambda pair: pair[0], default=(0, None))


def check_context(cfg: RunConfig, data: FederationData, cache_dir: Path) -> None:
    """Raise ContextLengthError (one line: who, which model, how many tokens, what to change) when a
    training example or a generation of a participant cannot fit its model's positions."""
    owners = [("the server", cfg.server.model, data.server_corpus, [data.public, data.global_test])]
    owners += [(f"client-{k}", cfg.clients[k].model, cd.train, [data.public, cd.test, data.global_test, cd.heldout])
               for k, cd in enumerate(data.clients)]
    models = {}
    max_new = cfg.round.max_new_tokens
    for who, model_cfg, train, generated_on in owners:
        if model_cfg.name not in models:
            models[model_cfg.name] = _model(model_cfg, cache_dir)
        lm = models[model_cfg.name]
        limit = lm.max_positions
        if limit is None:
            continue
        model = f"{who}'s model {model_cfg.name} has {limit} positions"
        sizes = [p + s + 1 for p, s in zip(lm.prefix_lengths([e.prompt for e in train]),
                                           lm.token_counts([e.solution for e in train]))]
        tokens, example = _longest(sizes, train)
        if tokens > limit:
            raise ContextLengthError(
                f"{model}, but its training example {example.id} is {tokens} tokens (prompt, solution and eos); "
                "leave longer examples out of the data, or use a model with more positions"
            )
        prompts = [e for examples in generated_on for e in examples]
        tokens, example = _longest(lm.prefix_lengths([e.prompt for e in prompts]), prompts)
        if tokens + max_new > limit:
            room = limit - tokens
            fix = f"set round.max_new_tokens to at most {room}, " if room > 0 else ""
            raise ContextLengthError(
                f"{model}, but the prompt of {example.id} ({tokens} tokens) and round.max_new_tokens={max_new} "
                f"need {tokens + max_new}; {fix}leave the longest prompts out of the data, or use a model with "
                "more positions"
            )


def federation_data(cfg: RunConfig):
    """The run's data sets; a data problem (domains missing, sets too small) as one-line DataError."""
    try:
        return build_federation_data(cfg.data, len(cfg.clients), cfg.seed)
    except DataFileError:
        raise  # the CLI lists its bad lines
    except OSError as err:
        raise DataError(f"data.path: {err.filename or cfg.data.path}: {err.strerror or err}") from None
    except ValueError as err:
        msg = str(err).strip().splitlines()[0]
        raise DataError(msg if msg.startswith("data") else f"data: {msg}") from None


def checked_data(cfg: RunConfig):
    """The run's data sets, checked against the config and against every model's context
    (`check_context`), so that data that does not fit fails in one line before anything trains."""
    data = federation_data(cfg)
    check_context(cfg, data, default_cache_dir(cfg))
    return data
