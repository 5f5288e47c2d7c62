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


def uniform_positions(n: int, k: int, generator: torch.Generator | None) -> torch.Tensor:
    """k of the positions 0..n-1, drawn uniformly without replacement (on the generator's device)."""
    device = generator.device if generator is not None else "cpu"
    return torch.randperm(n, generator=generator, device=device)[:k]


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

def kept_count(n: int, keep: float, at_least_one: bool = True) -> int:
    """int(keep * n) as in Composer; by default never fewer than one example of a non-empty batch
    (Composer itself keeps int(keep * n), which is 0 for a small enough last batch)."""
    k = int(keep * n)
    return max(1, k) if n and at_least_one else k


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


def rank_select(losses: torch.Tensor, keep: float, generator: torch.Generator | None,
                at_least_one: bool = True) -> torch.Tensor:
    """Draw int(keep*N) positions without replacement, by loss rank (Composer's select_using_loss)."""
    n = losses.numel()
    k = kept_count(n, keep, at_least_one)
    if k == 0:
        return torch.empty(0, dtype=torch.long, device=losses.device)
    order = torch.argsort(losses)
    probs = rank_probabilities(n, keep, device=losses.device)
    drawn = torch.multinomial(probs, k, replacement=False, generator=generator)
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



# --- RS2: repeated random subsets without replacement (Okanovic et al.; PatrikOkanovic/RS2) ------

def rs2_window(epoch: int, n: int, size: int) -> tuple[int, int, int]:
    """(pass, start, end) of the reference's subset for `epoch` (0-based): consecutive slices
    [start, end) of one permutation of the n examples; a pass ends when a slice ends exactly at n
    or after a slice that wraps (start >= end: the permutation's tail, then its head up to `end`),
    and the next pass draws a new permutation. The reference advances end by size modulo n + 1,
    so a wrapping slice holds size - 1 examples (RS2 uniform_no_replacement.py L21-31)."""
    pas, start, end = 0, 0, size
    for _ in range(epoch):
        if end < start or end == n:
            pas, start, end = pas + 1, 0, size
        else:
            start, end = end, (end + size) % (n + 1)
    return pas, start, end


def rs2_subset(perm: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """The examples of one RS2 window of the permutation `perm`."""
    return perm[start:end] if start < end else torch.cat([perm[start:], perm[:end]])


# --- Pruning at epoch start: InfoBatch (Qin et al. 2024) and KAKURENBO (Thao Nguyen et al. 2023) --
# These decide once per epoch, over the whole training set, which examples the epoch skips.

def well_learned(scores: torch.Tensor) -> torch.Tensor:
    """InfoBatch's "well-learned" examples: a finite score strictly below the mean of the finite
    scores. Unseen examples (score +inf) neither count in the mean nor are ever well-learned."""
    seen = torch.isfinite(scores)
    mean = torch.where(seen, scores, torch.zeros_like(scores)).sum() / seen.sum().clamp_min(1)
    return seen & (scores < mean)


def infobatch_prune(scores: torch.Tensor, prune_ratio: float,
                    generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch's InfoBatch decision: (visit mask, loss weight per example).

    Of the n well-learned examples, int((1 - prune_ratio) * n) drawn uniformly without replacement
    stay, with loss weight 1 / (1 - prune_ratio) so that their expected gradient stands in for the
    pruned ones; the others are skipped. Every other example stays with weight 1. The draw runs on
    the generator's device (a CPU generator: the same draw on every device and rank).
    """
    well = well_learned(scores)
    candidates = well.nonzero().squeeze(1)
    keep = 1.0 - prune_ratio
    n_kept = int(keep * candidates.numel())
    order = torch.randperm(candidates.numel(), generator=generator,
                           device=generator.device if generator is not None else "cpu")
    kept = candidates[order[:n_kept].to(candidates.device)]
    visit = ~well
    visit[kept] = True
    weight = torch.ones_like(scores, dtype=torch.float32)
    weight[kept] = 1.0 / keep
    return visit, weight


def infobatch_prunes(epoch: int, progress: float, delta: float) -> bool:
    """Whether epoch `epoch` (0-based), starting at `progress` (fraction of the run done), prunes.
    The reference's sampler calls reset() once in its constructor, so epoch e runs reset number
    e + 1 and prunes while e + 1 <= delta * epochs (InfoBatch infobatch.py L174, L180-190): only
    epochs that END within delta of the run prune. The epoch's end is progress * (e + 1) / e,
    exact for a run measured in epochs and the mean epoch so far under a budget (epoch 0 prunes
    nothing anyway: no example has a score yet). The tolerance absorbs the rounding of progress."""
    end = progress * (epoch + 1) / epoch if epoch > 0 else progress
    return end <= delta + 1e-9


KAKURENBO_DECAY = (1.0, 0.8, 0.6, 0.4)   # F_e / F before the 1st, after the 1st, 2nd and 3rd lr drop


def kakurenbo_fraction(fraction: float, position: float, drops) -> float:
    """F_e: the maximum hidden fraction at `position` (same unit as `drops`): F, then 0.8F, 0.6F and
    0.4F once the 1st, 2nd and 3rd drop are reached; later drops keep 0.4F (the reference)."""
    passed = sum(1 for d in drops if d <= position)
    return fraction * KAKURENBO_DECAY[min(passed, len(KAKURENBO_DECAY) - 1)]


def kakurenbo_hide(loss: torch.Tensor, correct: torch.Tensor, confidence: torch.Tensor, fraction: float,
                   tau: float) -> torch.Tensor:
    """KAKURENBO's hidden set (a bool mask): among the int(fraction * N) lowest-loss examples, those
    whose last forward predicted the label with confidence >= tau. The sort is stable, so ties
    resolve by index and every device and rank hides the same examples."""
    n_low = int(fraction * loss.numel())
    lowest = torch.argsort(loss, stable=True)[:n_low]
    hidden = torch.zeros_like(correct, dtype=torch.bool)
    hidden[lowest] = correct[lowest] & (confidence[lowest] >= tau)
    return hidden


def hidden_lr_factor(fraction: float) -> float:
    """KAKURENBO's learning-rate factor 1 / (1 - fraction): an epoch with a fraction of the data
    hidden takes that many fewer steps, and the larger lr keeps the epoch's total update size."""
    return 1.0 / (1.0 - fraction)
