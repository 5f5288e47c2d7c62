"""The selection math, as pure functions over tensors.

Nothing here keeps state or touches the host: every function takes tensors (and, where random,
an explicit generator) and returns tensors on the same device, so the training loop can call them
without host synchronisation and tests can check them exactly.
"""
from __future__ import annotations

import torch


# --- Selective-Backprop (Jiang et al. 2019) -----------------------------------------------------

def loss_percentiles(losses: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """Fraction of `history` strictly below each loss (the authors' percentile definition)."""
    ordered = torch.sort(history.float()).values
    below = torch.searchsorted(ordered, losses.float().contiguous(), side="left")
    return below.float() / history.numel()


def sb_probabilities(losses: torch.Tensor, history: torch.Tensor, beta: float,
                     min_prob: float = 0.0) -> torch.Tensor:
    """P = max(min_prob, percentile ** beta).

    `history` is the window of recent losses that already includes this batch's losses.
    """
    return loss_percentiles(losses, history).pow(beta).clamp_min(min_prob)


def bernoulli_keep(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Keep example i with probability probs[i]; returns a bool mask."""
    return torch.rand(probs.shape, generator=generator, device=probs.device) < probs


def bernoulli_weights(probs: torch.Tensor) -> torch.Tensor:
    """Importance weights for Bernoulli selection: w_i = m / (N p_i), with m = sum(p).

    (1/m) * sum over kept of w_i * g_i is an unbiased estimate of the batch-mean gradient
    (1/N) sum g_i, and the weights average to 1 over the expected kept set, so the learning
    rate keeps its meaning. Examples with p = 0 are never kept and get weight 0 here.
    """
    n = probs.numel()
    m = probs.sum()
    safe = torch.where(probs > 0, probs, torch.ones_like(probs))
    return torch.where(probs > 0, m / (n * safe), torch.zeros_like(probs))


# --- Katharopoulos & Fleuret 2018 (the paper's Kath18 comparator) -------------------------------

def loss_proportional(losses: torch.Tensor) -> torch.Tensor:
    """Sampling distribution proportional to loss; uniform when every loss is zero."""
    scores = losses.float().clamp_min(0)
    total = scores.sum()
    uniform = torch.full_like(scores, 1.0 / scores.numel())
    return torch.where(total > 0, scores / total.clamp_min(torch.finfo(scores.dtype).tiny), uniform)


def sample_with_replacement(probs: torch.Tensor, k: int,
                            generator: torch.Generator | None) -> torch.Tensor:
    return torch.multinomial(probs, k, replacement=True, generator=generator)


def pool_weights(probs: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
    """Importance weights 1/(B p) of examples drawn with replacement from a pool of B.

    The mean over the k draws of w * g is an unbiased estimate of the pool-mean gradient, and
    E[w] = 1, so this is already normalised.
    """
    return 1.0 / (probs.numel() * probs[drawn])


def variance_reduction(scores: torch.Tensor) -> torch.Tensor:
    """Kath18's estimate 1/sqrt(1 - sum (g-u)^2 / sum g^2) of the variance reduction.

    g are the pool's normalised importance scores and u = 1/B. It is 1 for uniform scores and
    grows as the scores concentrate (it equals sqrt(B * sum g^2)).
    """
    g = loss_proportional(scores)
    u = 1.0 / g.numel()
    ratio = ((g - u) ** 2).sum() / (g ** 2).sum()
    return 1.0 / torch.sqrt((1.0 - ratio).clamp_min(1e-12))


def tau_threshold(pool: int, batch: int) -> float:
    """Kath18's default start threshold tau_th = (B + 3b) / (3b)."""
    return (pool + 3 * batch) / (3 * batch)


# --- Deterministic and rank-based in-batch selection -------------------------------------------

def kept_count(n: int, keep: float) -> int:
    """int(keep * n) as in Composer, but never fewer than one example of a non-empty batch."""
    return max(1, int(keep * n)) if n else 0


def topk_positions(losses: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the k highest losses (online batch selection / RHO-Loss's loss baseline)."""
    return torch.topk(losses, k, sorted=False).indices


def rank_probabilities(n: int, keep: float, device=None) -> torch.Tensor:
    """Composer's sampling weights over examples sorted by ascending loss.

    The example at sorted rank r has percentile (r + 0.5) / n and weight percentile^(1/keep - 1).
    """
    perc = (torch.arange(n, device=device, dtype=torch.float64) + 0.5) / n
    w = perc.pow(1.0 / keep - 1.0)
    return (w / w.sum()).float()


def rank_select(losses: torch.Tensor, keep: float,
                generator: torch.Generator | None) -> torch.Tensor:
    """Draw int(keep*N) positions without replacement, by loss rank (Composer's select_using_loss)."""
    n = losses.numel()
    order = torch.argsort(losses)
    probs = rank_probabilities(n, keep, device=losses.device)
    drawn = torch.multinomial(probs, kept_count(n, keep), replacement=False, generator=generator)
    return order[drawn]


def composer_active(progress: float, batch: int, start: float, end: float, interrupt: int) -> bool:
    """Whether Composer's variant selects on this batch: inside [start, end) of training and not
    an `interrupt`-th batch (which is a plain step)."""
    in_window = start <= progress < end
    plain_step = interrupt > 0 and (batch + 1) % interrupt == 0
    return in_window and not plain_step


def expected_fraction(beta: float) -> float:
    """E[U^beta] for U ~ Uniform(0, 1): SB's backprop fraction on stationary losses."""
    return 1.0 / (1.0 + beta)


def cost_model_speedup(f_sel: float, fb: float, frac: float, staleness: int = 1) -> float:
    """Per-epoch speedup bound: (f+b) / (f_sel/n + s(f+b)) (Traditional costs f+b per example)."""
    return fb / (f_sel / staleness + frac * fb)

