"""Typed run configuration, loaded from YAML with `key=value` overrides.

Every run directory stores the resolved config; config + seed reproduce the run.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraConfig(_Strict):
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class ModelConfig(_Strict):
    """A model: a `tiny-*` preset, `smollm2-135m-instruct`, `gemma-3-270m`, or a Hugging Face id / local path."""

    name: str
    lora: LoraConfig | None = None
    dtype: Literal["float32", "bfloat16", "auto"] = Field(
        "float32", description="bfloat16 = bf16 autocast over fp32 weights; auto = bf16 autocast on CUDA, fp32 elsewhere")
    init_group: str | None = Field(
        None, description="participants with the same group start from the same random weights (FedAvg needs "
        "a common initialisation); None = each participant its own"
    )


class TrainConfig(_Strict):
    """One supervised phase: AdamW, linear warmup then cosine decay, fresh optimizer each phase."""

    steps: int = Field(ge=0, description="steps of the phase; with `epochs`, the cap")
    epochs: float | None = Field(
        None, gt=0, description="size the phase by its data: ceil(epochs * n / batch_size) steps, at most `steps`; "
        "None = always `steps`"
    )
    batch_size: int = Field(64, gt=0)
    lr: float = Field(3e-3, gt=0)
    warmup: float = Field(0.05, ge=0, le=1)
    weight_decay: float = Field(0.01, ge=0)

    def sized(self, n: int) -> TrainConfig:
        """This phase for a training set of `n` items, with its step count fixed. Why epochs: a learner
        given 200 samples and a fixed 250 steps of batch 64 passes over them 80 times and over-fits them,
        while indiscriminate distillation of 600 passes over its data 27 times; sizing by epochs makes
        both see their data equally often."""
        if self.epochs is None:
            return self
        return self.model_copy(update={"steps": min(self.steps, math.ceil(self.epochs * n / self.batch_size)),
                                       "epochs": None})


class MathMixConfig(_Strict):
    """Digit ranges (inclusive) per split: clients see short operands, tests and the server longer ones."""

    client_digits: tuple[int, int] = (2, 3)
    server_digits: tuple[int, int] = (2, 5)
    public_digits: tuple[int, int] = (2, 5)
    test_digits: tuple[int, int] = (2, 5)


class DataConfig(_Strict):
    source: Literal["math-mix", "gsm-symbolic", "gsm8k", "mathinstruct"] = "math-mix"
    path: str | None = Field(None, description="data file for the gsm8k / mathinstruct sources")
    domains: list[str] | None = Field(
        None, description="math-mix task names or gsm-symbolic template indices; None = all"
    )
    partition: Literal["domain", "dirichlet"] = "domain"
    dirichlet_alpha: float = Field(0.5, gt=0)
    client_domains: list[list[str]] | None = Field(
        None, description="with partition=domain: the domains of each client; None = round-robin"
    )
    public_weights: dict[str, float] | None = Field(
        None, description="relative share of each domain in the public set P; None = even (domain-shift uses this)"
    )
    server_weights: dict[str, float] | None = Field(
        None, description="relative share of each domain in the server's corpus G; None = even. A small share "
        "leaves the server weak where a client is strong: knowledge the clients can give back"
    )
    client_train: int = Field(1200, gt=0)
    client_test: int = Field(250, gt=0)
    client_heldout: int = Field(
        128, ge=0, description="per client, private examples set aside (never trained on, never sent) on which "
        "LaDa measures the learner's own-task reward (lada.reward=heldout); from the distribution the client is "
        "evaluated on (math-mix: the test digits), drawn after every other set, so they change none"
    )
    public: int = Field(3000, gt=0)
    server_corpus: int = Field(3000, gt=0)
    global_test_per_domain: int = Field(250, gt=0)
    math_mix: MathMixConfig = MathMixConfig()

    @model_validator(mode="after")
    def _file_sources_need_path(self) -> DataConfig:
        if self.source in ("gsm8k", "mathinstruct") and not self.path:
            raise ValueError(f"data.path is required for data.source={self.source}")
        return self


class ParticipantConfig(_Strict):
    model: ModelConfig
    base: TrainConfig = Field(description="round-0 preparation on own data (cached)")
    transfer_lr: float | None = Field(
        None, gt=0, description="learning rate of this participant's transfer phases; default round.transfer.lr"
    )

    def transfer(self, round_cfg: RoundConfig) -> TrainConfig:
        """`round.transfer` at this participant's own learning rate. Why per participant: a converged
        larger model loses what it knew at a rate the small ones need (benchmarks/continued_training.py)."""
        if self.transfer_lr is None:
            return round_cfg.transfer
        return round_cfg.transfer.model_copy(update={"lr": self.transfer_lr})


class RoundConfig(_Strict):
    """What happens in every collaboration round."""

    local: TrainConfig = TrainConfig(steps=100)
    transfer: TrainConfig = TrainConfig(steps=300)
    transfer_local_fraction: float = Field(
        0.25, ge=0, lt=1, description="share of each transfer batch drawn from the learner's own data"
    )
    server_local: TrainConfig = TrainConfig(steps=0)
    candidates: int = Field(600, gt=0, description="public samples offered per round (m)")
    paths_per_question: int = Field(1, gt=0, description="paths the teacher generates per question (n)")
    temperature: float = Field(0.0, ge=0, description="0 = greedy paths")
    max_new_tokens: int = Field(80, gt=0)


class LadaConfig(_Strict):
    """The LaDa plug-in (used by `*+lada` methods). Ablations are values here, not code forks."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    filter: Literal["eenet", "random", "loss", "oracle", "none"] = Field(
        "eenet", description="oracle: an upper bound that reads the samples' domain labels (never a real filter)"
    )
    reward: Literal["heldout", "heldout_contrast", "nll_drop"] = Field(
        "heldout_contrast", description="heldout: each pick's gradient cosine with the learner's loss on its held-out own "
        "data (its first-order share of that loss's change), the round's lowest for a pick with nothing to learn; "
        "heldout_contrast: the cosine with (unit held-out gradient - unit mean gradient of the offered pool), "
        "what a pick does for the own task beyond the average candidate; nll_drop: relative NLL drop on the "
        "pick's own path (ablation)"
    )
    loss: Literal["dard", "sft"] = "dard"
    ref: Literal["teacher", "self", "none"] = "teacher"
    budget: int = Field(200, gt=0, description="b: samples each client learns from per round (down)")
    up_budget: int = Field(100, gt=0, description="b': samples the server learns from per client (up)")
    up_reward: Literal["solved", "heldout", "nll_drop"] = Field(
        "solved", description="up direction: solved = the server now answers the picked question it got wrong; "
        "heldout = each pick's gradient cosine with the server's loss on the gold solutions of the client's other "
        "novel questions (those the client solved and the server did not, left unpicked): what the pick does "
        "for the server on the client's domain as the server can see it, beyond the question itself; "
        "nll_drop = relative NLL drop on the client's path (ablation)"
    )
    up_min_pairs: int = Field(
        32, ge=0, description="the server trains on the up pairs only once it has this many; fewer are carried "
        "over to the next round"
    )
    host_up: Literal["up_picks", "exchanged", "pool"] = Field(
        "pool", description="what the host's own loss teaches the server on under X+lada: F_k^up's picks; "
        "every sample exchanged with client k (its down picks too: FedMKT's server then also fuses where its "
        "own distribution wins, as FedMKT does on every candidate); or F_k^up's picks and, with no client's "
        "knowledge (its own distributions and the gold solution), every other candidate of the round, so "
        "the server keeps the host's anchor on all public data while the clients answer only on the picks"
    )
    up_teacher: Literal["better", "always"] = Field(
        "better", description="under X+lada, what a host's distillation into the server (FedCoLLM's, from the "
        "aggregate) takes from its teacher: better = per sample, the teacher's distribution only where its "
        "cross-entropy on the gold solution is below the server's own, else the server's own (FedMKT's "
        "`greater` selection: the server learns only what it lacks); always = the host's distillation as "
        "published. FedMKT selects by fedmkt.strategy either way"
    )
    up_loss: Literal["lada", "none"] | None = Field(
        None, description="up direction: lada = after the host's own loss, the server trains lada.loss (DARD, or "
        "SFT) on the up pairs; none = the server learns from F_k^up's picks only through the host's own loss "
        "(FedMKT's KD with the clients' distributions, FedCoLLM's distillation), which needs a host that trains "
        "the server and lada.host_loss=add; null = none where the host's loss teaches the server, else lada"
    )
    host_loss: Literal["add", "replace"] | None = Field(
        None, description="X+lada: add DARD to host X's own loss on LaDa's picks, or replace it; null = the host's "
        "default (distill: replace, its SFT is what DARD stands for; fedmkt, fedcollm: add)"
    )
    cold_start: Literal["kmeans", "lowest_nll"] = Field(
        "kmeans", description="eenet's first round, before any reward: kmeans = one pick per k-means cluster of the "
        "features (diverse); lowest_nll = the paths the learner already finds most likely (the learnability prior)"
    )
    net_features: Literal["all", "scalars"] = Field(
        "all", description="what eenet's nets read: every feature, or the six scalars only (the question "
        "embedding drifts as the learner trains); the k-means cold start reads every feature either way"
    )
    alpha: float = Field(0.1, ge=0, description="exploration weight in f1 + alpha * f2")
    beta: float = Field(0.1, gt=0, description="DARD inverse temperature")
    lambda_: float = Field(1.0, ge=0, alias="lambda", description="weight of the SFT term on y+")
    length_normalize: bool = True
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    anchor: float = Field(
        0.0, ge=0, description="DPO-Positive remedy: margin minus anchor * the drop of the chosen path's "
        "log-prob below the frozen learner's; 0 = off"
    )
    embedding_dim: int = Field(
        16, ge=0, description="random projection of the learner's question embedding fed to the filter; 0 = the scalar features only"
    )
    student_temperature: float = Field(0.0, ge=0, description="learner paths (rejected side); 0 = greedy")
    contrast: Literal["path", "divergence"] = Field(
        "path", description="what DARD's contrastive term scores: whole paths, or (a remedy) only the steps "
        "after the first line where the chosen and rejected paths differ"
    )


class FedMKTConfig(_Strict):
    """The `fedmkt` host (arXiv 2406.02224): mutual top-k logit distillation on the public samples."""

    top_k: int = Field(128, gt=0, description="logits per token each side sends")
    lm_weight: float = Field(0.9, ge=0, le=1, description="a in a * L_LM + (1 - a) * L_KD")
    strategy: Literal["greater", "weighted_mean"] = "greater"


class FedCoLLMConfig(_Strict):
    """The `fedcollm` host: FedAvg of the clients, then server-side mutual distillation LLM <-> aggregate."""

    top_k: int = Field(128, gt=0)
    kd_weight: float = Field(1.0, ge=0, description="lambda in L_LM + lambda * KL")


class RuntimeConfig(_Strict):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(0, ge=0, description="torch CPU threads; 0 = all cores")
    eval_batch_size: int = Field(256, gt=0)
    cache_dir: str | None = Field(None, description="base-model cache; default ~/.cache/fedlada")
    audit: bool = Field(True, description="check every message for clients' private text before it is sent "
                        "(federation/audit.py, docs/reliability.md)")
    on_client_failure: Literal["fail", "skip"] = Field(
        "fail", description="a client whose handler raises (or, under Flower, times out): fail = stop the run; "
        "skip = leave it out of that round, back from its last checkpoint in the next"
    )
    client_timeout: float | None = Field(
        None, gt=0, description="under Flower: seconds to wait for one reply before the client counts as failed; "
        "None = wait for ever"
    )


class RunConfig(_Strict):
    name: str = "run"
    seed: int = 0
    method: str = "standalone"  # a name in fedlada.methods, which checks it (this layer knows no host)
    rounds: int = Field(3, ge=0)
    data: DataConfig = DataConfig()
    server: ParticipantConfig
    clients: list[ParticipantConfig] = Field(min_length=1)
    round: RoundConfig = RoundConfig()
    lada: LadaConfig = LadaConfig()
    fedmkt: FedMKTConfig = FedMKTConfig()
    fedcollm: FedCoLLMConfig = FedCoLLMConfig()
    runtime: RuntimeConfig = RuntimeConfig()

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        cd = self.data.client_domains
        if cd is not None and len(cd) != len(self.clients):
            raise ValueError(f"data.client_domains has {len(cd)} entries for {len(self.clients)} clients")
        return self


class ConfigError(ValueError):
    """A config problem, phrased as one line that names the key."""


def _parse_value(text: str):
    return yaml.safe_load(text) if text.strip() else ""


def apply_override(raw: dict, assignment: str) -> None:
    """Apply `a.b.0.c=value` to a nested dict/list structure (value parsed as YAML)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key=value")
    key, value = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{key}: {part!r} is not an index of a list of {len(node)}")
            idx = int(part)
            if last:
                node[idx] = _parse_value(value)
            else:
                node = node[idx]
        else:
            if last:
                node[part] = _parse_value(value)
            else:
                node = node.setdefault(part, {})
                if node is None:
                    raise ConfigError(f"{key}: {part} is null")


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "config"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    extra = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{loc}: {msg}{extra}"


def config_from_dict(raw: dict) -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


PACKAGED_CONFIGS = Path(__file__).parent / "configs"


def resolve_config_path(name_or_path: str | None) -> Path:
    """A YAML path, or the name of a packaged config (`quickstart`)."""
    if name_or_path is None:
        name_or_path = "quickstart"
    path = Path(name_or_path)
    if path.exists():
        return path
    packaged = PACKAGED_CONFIGS / f"{name_or_path.removesuffix('.yaml')}.yaml"
    if packaged.exists():
        return packaged
    known = ", ".join(sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.yaml")))
    raise ConfigError(f"config {name_or_path!r}: no such file or packaged config ({known})")


def load_config(name_or_path: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    path = resolve_config_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML ({err.__class__.__name__})") from None
    for assignment in overrides:
        apply_override(raw, assignment)
    return config_from_dict(raw)


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True), sort_keys=False)


def cache_root() -> Path:
    """`$FEDLADA_CACHE`, else `~/.cache/fedlada`: the cache of a run that names none."""
    return Path(os.environ.get("FEDLADA_CACHE", Path.home() / ".cache" / "fedlada"))


def default_cache_dir(cfg: RunConfig) -> Path:
    """Where models built once (base models, converted checkpoints, vocabulary maps) are kept."""
    if cfg.runtime.cache_dir:
        return Path(cfg.runtime.cache_dir).expanduser()
    return cache_root()
