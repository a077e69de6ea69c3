"""EE-Net (Ban, Yan, Banerjee, He, arXiv 2305.03784) as LaDa's learnability-aware selector (LaDa paper, arXiv 2602.18749).

Why EE-Net: which public samples a learner gains from is a nonlinear function of the pair (measured here:
domain affinity first, then the learner's errors, and "mid-range difficulty" was the worst rule), so a
fixed heuristic cannot be right for every pair; a neural contextual bandit learns it from the rewards.

- ExploitNet `f1(phi)`: 2-layer ReLU MLP, predicted reward, MSE on every observed (phi, r).
- ExploreNet `f2(g)`: 2-layer ReLU MLP on `g = grad_theta1 f1(phi)`, regressed on the residual
  `r - f1(phi)` of f1 *as it was when it scored the sample*. The gradient says where in f1's
  parameter space a candidate lies, so f2 learns in which regions f1 has been under- (or over-)
  estimating: the "potential gain" that UCB-style bonuses approximate with confidence widths.
- Score `s = f1 + alpha * f2`, top b. EE-Net's +1 shift of the f2 target is dropped:
  it only moves f2's output by a constant and the ranking is unchanged.
- Round 1 (no reward history): the untrained nets rank arbitrarily, so a cold-start rule seeds the
  history: `cold_start="kmeans"` picks b diverse samples (the one nearest each centroid of k-means on
  the standardized features); `cold_start="lowest_nll"` takes three quarters of b as the paths the
  learner already finds most likely (`aux["learner_nll"]`, the learnability prior: a small learner's NLL
  of a teacher path is lowest on its own domain) and the last quarter by k-means over the rest, so
  that the replay also holds samples the prior ranks low (without that quarter the nets never see a
  reward outside the prior's choice and rank the unseen region arbitrarily: on `standard`, seed 0, the
  round-2 own-domain share of two of three clients fell to 0.02-0.04, benchmarks/filter_probe.py).
  The prior wins round 1 but ends lower on `standard` in every seed (docs/results.md): the learner
  already solves about half of its picks, so k-means is the default.

Choices the paper leaves open, fixed here:

- The nets are small enough that framework overhead, not arithmetic, is the whole cost, so they are
  plain float64 numpy with hand-written backprop and Adam (3-4x faster per step than the same nets in
  torch here, and exactly reproducible). They, and k-means, run with one BLAS / OpenMP thread: at these
  sizes more threads only add synchronisation (3x slower for the nets, 13x for k-means on a shared
  2-core machine). The closed form of a 2-layer MLP's parameter gradient gives every candidate's `g`
  at once, with no per-sample autograd.
- The gradient has `h*d + 2h + 1` entries; it is mean-pooled in contiguous, nearly equal blocks
  (parameter order W1, b1, w2, b2) to `GRAD_DIM` values, as the EE-Net reference code pools blocks of
  50, so f2 stays as small as f1.
- Features are standardized within each offered pool (mean and std over every candidate of that
  `select`, chosen or not), and a pick is stored in the replay as it was scaled when it was chosen. The
  learner moves between rounds: its NLL of every path falls as it learns, and its embedding of a
  question drifts, so a running scaler over all rounds puts a round-2 candidate where round 1's easy
  ones were. Within its pool a feature says how a candidate compares with the others offered now,
  which is what a choice among them needs. Measured with benchmarks/filter_probe.py on `standard`
  (round-2 own-domain share of the top 300 per client, seeds 0 / 1 / 2): 0.80 0.82 0.58 / 0.99 0.99
  0.48 / 0.94 0.85 0.55 (mean 0.78) against 0.67 0.93 0.20 / 0.55 1.00 0.32 / 0.53 0.96 0.25 (mean
  0.60) with the running scaler.
- The nets read every feature, the question embedding included, by default. Replayed from round 1's
  state (benchmarks/filter_features.py) they found the own domain in round 2 more often on the six
  scalars alone, but whole runs on `standard` did not (docs/results.md), so `net_inputs` (the leading
  columns the nets read; `lada.net_features=scalars`) stays an ablation.
- Each update runs a fixed number of Adam steps on random minibatches of the (capped, most recent)
  replay: the cost per round stays flat as the history grows, and early rounds, whose replay is a few
  rows, still get enough steps. The nets are warm-started across rounds, the optimizer is fresh per
  update (so the state to checkpoint is just weights, replay, scaler and one numpy generator).
- All randomness (init, minibatches, k-means' seed) comes from one seeded numpy generator stored in the
  state, so save -> load -> continue equals an uninterrupted run bit for bit.

Contract: `update` must follow the `select` whose chosen rows it scores, before the next `select`,
on the selector as `select` left it (same object, or its `state_dict()` taken after `select`): `select`
moves the scaler and the generator, and f1's weights do not change in between, which is what lets
`update` recompute the gradient and the f1 prediction of selection time instead of carrying them
across the call. `update` on a state that has no pending `select` raises, so a caller that restores
the pre-selection state cannot silently train on mis-scaled features.
"""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from fedlada.filter.base import Selection, check_features, learner_nll

GRAD_DIM = 64
BATCH = 128
_ADAM_BETAS, _ADAM_EPS = (0.9, 0.999), 1e-8


class MLP:
    """`f(x) = w2 . relu(W1 x + b1) + b2`, PyTorch's default init (uniform +-1/sqrt(fan_in)) drawn from
    the caller's generator so the weights depend on the seed only. All parameters live in one flat
    vector `theta` (W1, b1, w2, b2 are views into it), which is both the layout of the gradient that
    ExploreNet sees and what lets one Adam update touch every parameter in a few array operations."""

    def __init__(self, n_in: int, hidden: int, rng: np.random.Generator):
        b_in, b_out = 1 / np.sqrt(n_in), 1 / np.sqrt(hidden)
        bounds = np.repeat([b_in, b_out], [hidden * n_in + hidden, hidden + 1])
        self.theta = rng.uniform(-bounds, bounds)
        self.W1 = self.theta[: hidden * n_in].reshape(hidden, n_in)
        self.b1 = self.theta[hidden * n_in : hidden * (n_in + 1)]
        self.w2 = self.theta[hidden * (n_in + 1) : hidden * (n_in + 2)]
        self.b2 = self.theta[-1:]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x @ self.W1.T + self.b1, 0) @ self.w2 + self.b2[0]

    def param_grad(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """f(x) and, per row, df/dtheta. With u = w2 * 1[W1 x + b1 > 0]:
        df/dW1 = u x^T, df/db1 = u, df/dw2 = relu(W1 x + b1), df/db2 = 1."""
        z = x @ self.W1.T + self.b1
        a = np.maximum(z, 0)
        u = self.w2 * (z > 0)
        n = len(x)
        flat = np.concatenate([(u[:, :, None] * x[:, None, :]).reshape(n, -1), u, a, np.ones((n, 1))], 1)
        return a @ self.w2 + self.b2[0], flat

    def mse_grad(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean squared error and its gradient w.r.t. theta (backprop through the two layers)."""
        z = x @ self.W1.T + self.b1
        a = np.maximum(z, 0)
        err = a @ self.w2 + self.b2[0] - y
        d_out = 2 * err / len(y)
        d_z = np.outer(d_out, self.w2) * (z > 0)
        grad = np.concatenate([(d_z.T @ x).ravel(), d_z.sum(0), a.T @ d_out, [d_out.sum()]])
        return float(np.mean(err**2)), grad


def _kmeans_pick(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One distinct sample nearest each of k centroids, largest cluster first; the score is the share
    of the pool the sample stands for. Distinctness: a centroid whose nearest sample is taken gets its
    nearest free one."""
    n = len(x)
    if k in (0, n):
        return np.arange(k), np.full(k, 1.0 / max(n, 1))
    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(x)
    sizes = np.bincount(km.labels_, minlength=k)
    dist = ((km.cluster_centers_[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    taken = np.zeros(n, dtype=bool)
    indices, score = [], []
    for c in np.argsort(-sizes, kind="stable"):
        order = np.argsort(dist[c], kind="stable")
        pick = order[~taken[order]][0]
        taken[pick] = True
        indices.append(pick)
        score.append(sizes[c] / n)
    return np.array(indices), np.array(score)


PRIOR_SHARE = 0.75  # of the cold start's picks, by the learnability prior; the rest explore (module docstring)


def _lowest_nll_pick(x: np.ndarray, aux: dict | None, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`PRIOR_SHARE` of k as the rows of lowest `aux["learner_nll"]` (score: minus the NLL), then the rest by
    k-means over the rows left (score: the share of those rows each stands for)."""
    nll = learner_nll(aux, len(x), "eenet's cold start 'lowest_nll'")
    order = np.argsort(nll, kind="stable")
    n_prior = round(PRIOR_SHARE * k)
    prior, rest = order[:n_prior], order[n_prior:]
    explore, share = _kmeans_pick(x[rest], k - n_prior, seed)
    return np.concatenate([prior, rest[explore]]), np.concatenate([-nll[prior], share])


def pool_scale(pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of a pool; a constant feature (e.g. "teacher path correct" on an
    all-correct pool) keeps std 1."""
    std = pool.std(0)
    return pool.mean(0), np.where(std < 1e-8, 1.0, std)


class EENetSelector:
    """`alpha` weighs exploration (EE-Net's w: the reference uses 0.1 early, 0.01 later); `hidden` is
    both nets' width; `lr` Adam's step size; `steps` Adam steps per update; `replay` the number of
    most recent observations kept for training; `cold_start` the rule of the first `select`, before any
    reward (module docstring); `net_inputs` how many leading feature columns the nets read (None: all; the
    cold start's k-means reads all either way)."""

    name = "eenet"

    def __init__(
        self,
        n_features: int,
        *,
        seed: int,
        alpha: float,
        hidden: int = 64,
        lr: float = 1e-2,
        steps: int = 50,
        replay: int = 4096,
        cold_start: Literal["kmeans", "lowest_nll"] = "kmeans",
        net_inputs: int | None = None,
    ):
        self.n_features, self.alpha, self.cold_start = n_features, alpha, cold_start
        self.net_inputs = n_features if net_inputs is None else net_inputs
        if not 0 < self.net_inputs <= n_features:
            raise ValueError(f"net_inputs: {net_inputs} of {n_features} features")
        self.lr, self.steps, self.replay = lr, steps, replay
        self._rng = np.random.default_rng(seed)
        self.f1 = MLP(self.net_inputs, hidden, self._rng)
        # np.array_split's blocks: contiguous, sizes differ by at most one
        n_params = self.f1.theta.size
        g_dim = min(GRAD_DIM, n_params)
        sizes = np.full(g_dim, n_params // g_dim)
        sizes[: n_params % g_dim] += 1
        self._block_starts, self._block_sizes = np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes
        self.f2 = MLP(g_dim, hidden, self._rng)
        self._pool_mean = np.zeros(n_features)  # the last select's pool: how its picks are scaled
        self._pool_std = np.ones(n_features)
        self._x = np.zeros((0, self.net_inputs))
        self._r = np.zeros(0)
        self._g = np.zeros((0, len(self._block_sizes)))
        self._res = np.zeros(0)
        self._updates = 0
        self._awaiting_update = False

    def _fit_scaler(self, pool: np.ndarray) -> None:
        """The offered pool's scaling, kept until the picks' update."""
        if len(pool):
            self._pool_mean, self._pool_std = pool_scale(pool)

    def _standardize(self, x: np.ndarray) -> np.ndarray:
        return (x - self._pool_mean) / self._pool_std

    def _f1_and_g(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f, flat = self.f1.param_grad(x[:, : self.net_inputs])
        return f, np.add.reduceat(flat, self._block_starts, axis=1) / self._block_sizes

    def _fit(self, x: np.ndarray) -> tuple[float, float]:
        """`steps` Adam steps (Kingma & Ba, PyTorch's defaults) on random minibatches of the replay, f1
        on (x, r) and f2 on (g, r - f1_then), sharing the minibatch draw. Returns each net's MSE on the
        whole replay afterwards."""
        nets, targets = (self.f1, self.f2), ((x, self._r), (self._g, self._res))
        moments = [(np.zeros_like(net.theta), np.zeros_like(net.theta)) for net in nets]
        (beta1, beta2), n = _ADAM_BETAS, len(self._r)
        for t in range(1, self.steps + 1):
            i = self._rng.choice(n, size=BATCH, replace=False) if n > BATCH else slice(None)
            for net, (inp, y), (m, v) in zip(nets, targets, moments):
                _, grad = net.mse_grad(inp[i], y[i])
                m *= beta1
                m += (1 - beta1) * grad
                v *= beta2
                v += (1 - beta2) * grad**2
                net.theta -= self.lr * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + _ADAM_EPS)
        return tuple(float(np.mean((net(inp) - y) ** 2)) for net, (inp, y) in zip(nets, targets))

    def select(self, features, budget, *, aux=None):
        raw = check_features(features, self.n_features)
        self._fit_scaler(raw)
        x = self._standardize(raw)
        k = max(0, min(budget, len(raw)))
        with threadpool_limits(1):
            f1, g = self._f1_and_g(x)
            f2 = self.f2(g)
            if len(self._r) == 0:
                seed = int(self._rng.integers(2**31))
                indices, score = (_lowest_nll_pick(x, aux, k, seed) if self.cold_start == "lowest_nll"
                                  else _kmeans_pick(x, k, seed))
            else:
                s = f1 + self.alpha * f2
                indices = np.argsort(-s, kind="stable")[:k]
                score = s[indices]
        self._awaiting_update = True
        return Selection(indices, score, f1[indices], f2[indices])

    def update(self, features, rewards):
        start = time.perf_counter()
        raw = check_features(features, self.n_features)
        r = np.asarray(rewards, dtype=np.float64)
        if r.shape != (len(raw),):
            raise ValueError(f"rewards: expected shape ({len(raw)},), got {r.shape}")
        if not self._awaiting_update:
            raise RuntimeError(
                "eenet update() without a pending select(): keep the selector, or its state_dict() taken "
                "after select(), until update()"
            )
        self._awaiting_update = False
        x = self._standardize(raw)
        with threadpool_limits(1):
            f1, g = self._f1_and_g(x)
        cap = self.replay
        self._x = np.concatenate([self._x, x[:, : self.net_inputs]])[-cap:]
        self._r = np.concatenate([self._r, r])[-cap:]
        self._g = np.concatenate([self._g, g])[-cap:]
        self._res = np.concatenate([self._res, r - f1])[-cap:]
        self._updates += 1
        if len(self._r) == 0:
            return {"loss": float("nan"), "loss_f2": float("nan"), "replay": 0, "seconds": 0.0}
        with threadpool_limits(1):
            loss1, loss2 = self._fit(self._x)
        return {"loss": loss1, "loss_f2": loss2, "replay": len(self._r), "seconds": time.perf_counter() - start}

    def state_dict(self):
        state = {
            "kind": self.name,
            "updates": self._updates,
            "awaiting_update": self._awaiting_update,
            "rng": self._rng.bit_generator.state,
            "pool_mean": self._pool_mean.copy(),
            "pool_std": self._pool_std.copy(),
            "replay_x": self._x.copy(),
            "replay_r": self._r.copy(),
            "replay_g": self._g.copy(),
            "replay_res": self._res.copy(),
            "f1": self.f1.theta.copy(),
            "f2": self.f2.theta.copy(),
        }
        return state

    def load_state_dict(self, state):
        if state.get("kind") != self.name:
            raise ValueError(f"state of a {state.get('kind')!r} selector given to an 'eenet' selector")
        if "pool_mean" not in state:
            raise ValueError("eenet state from an older fedlada (a running feature scaler): start the run afresh")
        for name, net in (("f1", self.f1), ("f2", self.f2)):
            theta = np.asarray(state[name], dtype=np.float64)
            if theta.shape != net.theta.shape:
                raise ValueError(f"{name}: {theta.size} parameters, this selector has {net.theta.size}")
            net.theta[:] = theta  # in place: W1, b1, w2, b2 are views
        self._updates = int(state["updates"])
        self._awaiting_update = bool(state["awaiting_update"])
        self._rng.bit_generator.state = state["rng"]
        self._pool_mean = np.array(state["pool_mean"], dtype=np.float64)
        self._pool_std = np.array(state["pool_std"], dtype=np.float64)
        self._x = np.array(state["replay_x"], dtype=np.float64).reshape(-1, self.net_inputs)
        self._r = np.array(state["replay_r"], dtype=np.float64)
        self._g = np.array(state["replay_g"], dtype=np.float64).reshape(-1, len(self._block_sizes))
        self._res = np.array(state["replay_res"], dtype=np.float64)
