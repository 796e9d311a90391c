r"""Sample-quality metrics: scores for models that can only be sampled (chapters 9 and 10).

A GAN cannot evaluate :math:`\log p_\theta(x)` and a diffusion model or a VAE only bounds it,
so models of every family are also compared on their samples. This module provides

* two-sample statistics for any dimension :math:`D`: the unbiased :math:`\mathrm{MMD}^2` with an
  RBF kernel (:func:`mmd2`, with a standard error), the energy distance
  (:func:`energy_distance`) and a permutation two-sample test (:func:`two_sample_test`);
* mode statistics on the 2D toys whose modes are known (:func:`mode_coverage`,
  :class:`ModeReport`);
* scores on the 8x8 digits in the feature space of a small classifier: the Fréchet distance
  (the idea of the FID of Heusel et al., 2017, at the scale of this data) and the entropy of the
  predicted-label histogram (:func:`digit_scores`, :func:`digit_floor`).

**Which real digits play which role** (``gmcourse.digits``: 1,500 training and 297 test
images). The classifier is fitted on the first :data:`CLASSIFIER_TRAIN_SIZE` = 1,000 training
digits only. The reference set of every Fréchet distance is the 297 *test* digits. The floor
(:func:`digit_floor`) scores the last 500 *training* digits, which the classifier never saw and
which are independent of the test digits: it is what a perfect sampler (fresh real digits) gets.
A generative model is trained on all 1,500 training digits; its samples are scored exactly like
the floor.

Every pairwise computation is done in blocks of ``batch_size x batch_size`` kernel entries,
accumulated in float64, so that samples of 10,000 points against 10,000 points never hold a full
kernel matrix in memory.

Inputs are tensors, NumPy arrays or nested lists of shape ``(n, D)``; they must be finite, the
two samples must have the same :math:`D`, and each needs at least 2 points. Bad input raises a
``ValueError`` that says what was expected.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from .divergences import Estimate

__all__ = [
    "mmd2",
    "median_bandwidth",
    "energy_distance",
    "two_sample_test",
    "ModeReport",
    "mode_coverage",
    "DigitClassifier",
    "digit_classifier",
    "digit_features",
    "digit_scores",
    "digit_floor",
    "frechet_distance",
    "frechet_distance_between",
    "CLASSIFIER_TRAIN_SIZE",
]

DEFAULT_BATCH_SIZE = 1024  # 1024 x 1024 float64 = 8 MB per kernel block


# ----------------------------------------------------------------------------- checks

def _as_points(x, name: str, min_points: int = 2) -> torch.Tensor:
    """``x`` as a float64 CPU tensor of shape ``(n, D)``, checked."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"{name} must be an array of points of shape (n, D), got {type(x).__name__}") from err
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (n, D) (n points of dimension D), got shape {tuple(x.shape)}")
    if x.shape[0] < min_points:
        raise ValueError(f"{name} needs at least {min_points} points, got {x.shape[0]}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} must have at least one dimension per point, got shape {tuple(x.shape)}")
    if x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
    x = x.detach().to(device="cpu", dtype=torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _as_pair(x, y, min_points: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    x = _as_points(x, "x", min_points)
    y = _as_points(y, "y", min_points)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension D, got x of shape {tuple(x.shape)} and y of shape {tuple(y.shape)}")
    return x, y


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return batch_size


def _check_bandwidth(bandwidth) -> float:
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)) or not (0 < bandwidth < math.inf):
        raise ValueError(f"bandwidth must be a positive finite number or None (median heuristic), got {bandwidth!r}")
    return float(bandwidth)


def _centred(*samples: torch.Tensor) -> list[torch.Tensor]:
    """Subtract the pooled mean (distances do not change; the Gram trick below loses less)."""
    mean = torch.cat(samples).mean(0)
    return [s - mean for s in samples]


def _augment(a: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Rows ``left``, ``right`` with ``left_i . right_j = -gamma |a_i - a_j|^2``.

    ``left = [2 gamma a, -gamma |a|^2, -gamma]`` and ``right = [a, 1, |a|^2]``: one matrix product
    gives a whole block of scaled squared distances (float64: the cancellation error is about
    1e-16 gamma |a|^2 per entry, the data being centred first).
    """
    sq = (a * a).sum(1, keepdim=True)
    ones = torch.ones_like(sq)
    return torch.cat([2 * gamma * a, -gamma * sq, -gamma * ones], 1), torch.cat([a, ones, sq], 1)


def _blocks(n: int, batch_size: int):
    return [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances :math:`|a_i - b_j|` (Gram trick in float64, clamped at 0)."""
    left, _ = _augment(a, 1.0)
    _, right = _augment(b, 1.0)
    return (left @ right.T).neg_().clamp_min_(0.0).sqrt_()


# ----------------------------------------------------------------------------- bandwidth

def median_bandwidth(x, y, max_points: int = 1000) -> float:
    r"""The median heuristic: the median pairwise distance :math:`|a - b|` within the pooled sample.

    The pooled sample ``cat(x, y)`` is thinned deterministically to at most ``max_points``
    points, evenly spaced in index (``torch.linspace`` over the rows), and the median is taken
    over the distinct pairs of that subset. Deterministic: no random numbers are drawn.

    On multimodal data the median is set by the distances *between* modes: on the 8 Gaussians
    (ring of radius 2, modes of std 0.1) it is about 2.8, so :math:`\mathrm{MMD}^2` at this bandwidth
    hardly sees errors *within* a mode; pass a bandwidth of the modes' scale (e.g.
    ``bandwidth=toy.std``) to probe them. Raises
    if the median is 0 (more than half the pairs coincide), where an RBF kernel of that width
    would be degenerate.
    """
    x, y = _as_pair(x, y)
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2:
        raise ValueError(f"max_points must be an int >= 2, got {max_points!r}")
    pooled = torch.cat([x, y])
    if pooled.shape[0] > max_points:
        index = torch.linspace(0, pooled.shape[0] - 1, max_points, dtype=torch.float64).round().long()
        pooled = pooled[index]
    distances = _distances(pooled, pooled)
    upper = torch.triu_indices(pooled.shape[0], pooled.shape[0], offset=1)
    median = distances[upper[0], upper[1]].median().item()
    if not median > 0:
        raise ValueError("the median pairwise distance of the pooled sample is 0; pass a bandwidth explicitly")
    return float(median)


# ----------------------------------------------------------------------------- MMD^2

class _KernelSums:
    """Row sums, column sums, total and sum of squares of the kernel matrix k(a_i, b_j) (float64).

    ``same=True`` (b is a): the diagonal is left out (U-statistic) and only the blocks on and
    above the block diagonal are computed, the matrix being symmetric.
    """

    def __init__(self, a, b, bandwidth, batch_size, same: bool):
        gamma = 1.0 / (2.0 * bandwidth**2)
        left, _ = _augment(a, gamma)
        _, right = _augment(b, gamma)
        self.rows = torch.zeros(a.shape[0], dtype=torch.float64)
        self.cols = torch.zeros(b.shape[0], dtype=torch.float64)
        self.row_squares = torch.zeros(a.shape[0], dtype=torch.float64)
        self.col_squares = torch.zeros(b.shape[0], dtype=torch.float64)
        for i0, i1 in _blocks(a.shape[0], batch_size):
            for j0, j1 in _blocks(b.shape[0], batch_size):
                if same and j0 < i0:
                    continue
                block = (left[i0:i1] @ right[j0:j1].T).clamp_max_(0.0).exp_()  # k = exp(-|a-b|^2 / (2 h^2))
                if same and i0 == j0:
                    block.fill_diagonal_(0.0)  # the U-statistic leaves out i == j
                squared = block * block
                self.row_squares[i0:i1] += squared.sum(1)
                self.rows[i0:i1] += block.sum(1)
                self.cols[j0:j1] += block.sum(0)
                self.col_squares[j0:j1] += squared.sum(0)
                if same and j0 != i0:
                    self.rows[j0:j1] += block.sum(0)
                    self.cols[i0:i1] += block.sum(1)
                    self.row_squares[j0:j1] += squared.sum(0)
                    self.col_squares[i0:i1] += squared.sum(1)
        self.squares = float(self.row_squares.sum())
        self.total = float(self.rows.sum())


def _within_moments(k: _KernelSums, n: int):
    """Unbiased estimates from the off-diagonal kernel matrix of one sample of size n.

    Returns ``(mean, m2, m1, mean_sq, shared)``: E k(x,x'), E k(x,x')^2, E k(x,x')k(x,x''),
    (E k)^2 estimated over four distinct indices, and the raw sum behind ``m1``. ``m1`` and ``mean_sq`` need n >= 3 and 4;
    below that they are returned as NaN (and the standard error becomes NaN).
    """
    pairs = n * (n - 1)
    mean = k.total / pairs
    m2 = k.squares / pairs
    shared = (k.rows**2).sum().item() - k.squares  # sum over distinct i, j, l of K_ij K_il
    m1 = shared / (pairs * (n - 2)) if n >= 3 else math.nan
    disjoint = k.total**2 - 2 * k.squares - 4 * shared  # sum over 4 distinct indices of K_ij K_lp
    mean_sq = disjoint / (pairs * (n - 2) * (n - 3)) if n >= 4 else math.nan
    return mean, m2, m1, mean_sq, shared


def mmd2(x, y, bandwidth: float | None = None, batch_size: int = DEFAULT_BATCH_SIZE, stderr: str = "null") -> Estimate:
    r"""Unbiased :math:`\mathrm{MMD}^2` between samples ``x`` (n, D) and ``y`` (m, D), with its standard error.

    **Definition.** With the RBF kernel :math:`k(a, b) = \exp(-|a-b|^2 / (2h^2))` of bandwidth
    :math:`h` (``bandwidth``; ``None`` uses :func:`median_bandwidth`), the U-statistic of
    Gretton et al. (2012, eq. 3),

    .. math::

        \widehat{\mathrm{MMD}}{}^2_u = \underbrace{\frac{1}{n(n-1)}\sum_{i\ne j}k(x_i, x_j)}_{A}
            + \underbrace{\frac{1}{m(m-1)}\sum_{i\ne j}k(y_i, y_j)}_{B}
            - 2\,\underbrace{\frac{1}{nm}\sum_{i,j}k(x_i, y_j)}_{C},

    is an unbiased estimator of :math:`\mathrm{MMD}^2 = \mathbb E k(x,x') + \mathbb E k(y,y') - 2\mathbb E k(x,y)`,
    which is 0 if and only if the two distributions are equal (the RBF kernel is characteristic).
    Being unbiased, it is negative about half of the time when they are equal.

    **Standard error.** By the Hoeffding decomposition the variance is a first-order part plus a
    second-order part,

    .. math::

        \mathrm{Var}\,\widehat{\mathrm{MMD}}{}^2_u \approx \frac4n\mathrm{Var}\,f_x(x) + \frac4m\mathrm{Var}\,f_y(y)
            + 2\sigma^2\Big[\frac1{n(n-1)} + \frac1{m(m-1)} + \frac2{nm}\Big],

    with the witness values :math:`f_x(a) = \mathbb E k(a, x') - \mathbb E k(a, y)` (and
    :math:`f_y` alike) and :math:`\sigma^2 = \mathbb E\,\tilde k(x, x')^2` for the doubly centred
    kernel :math:`\tilde k(a, b) = k(a, b) - g(a) - g(b) + \mu`, :math:`g(a) = \mathbb E k(a, x)`.
    Under the null hypothesis :math:`H_0: p_x = p_y` the witness is identically 0, the
    statistic is *degenerate*, and the second-order term is its exact variance: there
    :math:`\widehat{\mathrm{MMD}}{}^2_u = U_{xx}[\tilde k] + U_{yy}[\tilde k] - 2V_{xy}[\tilde k]`, a sum
    of uncorrelated averages of :math:`\tilde k`. The variance is :math:`O(1/n^2)`, not
    :math:`O(1/n)`.

    ``stderr="null"`` (the default) reports :math:`\sqrt{\mathrm{Var}_{H_0}}`, with
    :math:`\sigma^2 = \zeta_2 - 2\zeta_1` (:math:`\zeta_2 = \mathbb E k(x,x')^2 - \mu^2`,
    :math:`\zeta_1 = \mathbb E[k(x,x')k(x,x'')] - \mu^2`) estimated by U-statistics over distinct
    indices within x and within y (unbiased, pooled by number of pairs; relative error
    :math:`O(n^{-1/2})`). This is the denominator of the z-test of :math:`H_0`: "0 within
    5 standard errors" is then a meaningful check that two samples come from one distribution,
    and "many standard errors above 0" rejects it. Under an alternative the estimator spreads
    more than this.

    ``stderr="full"`` adds the first-order part, :math:`\mathrm{Var} f_x = \mathbb E f_x^2 - (\mathbb E f_x)^2`
    with every moment (:math:`\mathbb E[k(x,x')k(x,x'')]`, :math:`\mathbb E[k(x,x')k(x,y)]`,
    :math:`\mathbb E[k(x,y)k(x,y')]`, and the squared means over four distinct indices) an unbiased
    U-statistic computed from the kernel blocks' row and column sums, clipped at 0. It matches the
    spread of the estimator under an alternative. Under :math:`H_0` the estimate of a first-order
    part that is truly 0 has noise of the same :math:`O(1/n^2)` size as the variance itself, so
    after the clipping it overstates the null spread (by 20-25 % in the standard error in the
    tests); use it to put an error bar on a clearly non-zero :math:`\mathrm{MMD}^2`.
    ``tests/test_metrics.py`` checks both against the observed spread over many repetitions.

    Cost: three kernel block passes, :math:`O((n+m)^2 D)` time and ``batch_size**2`` memory.
    Needs n, m >= 4 for the standard error (>= 2 for the mean; below 4 the stderr is NaN).
    Returns :class:`~gmcourse.divergences.Estimate` ``(mean, stderr)``.
    """
    x, y = _as_pair(x, y)
    batch_size = _check_batch_size(batch_size)
    if stderr not in ("null", "full"):
        raise ValueError(f"stderr must be 'null' (standard deviation under H0) or 'full' (under any alternative), got {stderr!r}")
    h = median_bandwidth(x, y) if bandwidth is None else _check_bandwidth(bandwidth)
    x, y = _centred(x, y)
    n, m = x.shape[0], y.shape[0]
    kxx = _KernelSums(x, x, h, batch_size, same=True)
    kyy = _KernelSums(y, y, h, batch_size, same=True)
    kxy = _KernelSums(x, y, h, batch_size, same=False)

    mu_a, a2, a1, mu_a_sq, _ = _within_moments(kxx, n)
    mu_b, b2, b1, mu_b_sq, _ = _within_moments(kyy, m)
    mu_c = kxy.total / (n * m)
    estimate = mu_a + mu_b - 2 * mu_c

    # H0 (second-order) variance: 2 sigma^2 [1/(n(n-1)) + 1/(m(m-1)) + 2/(nm)], with
    # sigma^2 = E ktilde^2 = zeta_2 - 2 zeta_1 (doubly centred kernel), pooled over both samples
    sigma2 = (n * (n - 1) * (a2 - 2 * a1 + mu_a_sq) + m * (m - 1) * (b2 - 2 * b1 + mu_b_sq)) / (n * (n - 1) + m * (m - 1))
    second_order = 2 * sigma2 * (1 / (n * (n - 1)) + 1 / (m * (m - 1)) + 2 / (n * m))
    if min(n, m) < 4:
        variance = math.nan  # the unbiased moments need four distinct points per sample
    elif stderr == "null":
        variance = second_order
    else:
        # first-order part 4 Var f_x / n + 4 Var f_y / m, f_x(x) = E k(x, x') - E k(x, y),
        # Var f_x = E f_x^2 - (E f_x)^2 with every moment a U-statistic over distinct indices
        c10 = ((kxy.rows**2).sum().item() - kxy.squares) / (n * m * (m - 1))  # E k(x,y) k(x,y')
        c01 = ((kxy.cols**2).sum().item() - kxy.squares) / (n * (n - 1) * m)  # E k(x,y) k(x',y)
        mu_c_sq = (kxy.total**2 - (kxy.rows**2).sum().item() - (kxy.cols**2).sum().item() + kxy.squares) / (n * (n - 1) * m * (m - 1))
        x_dot = (kxx.rows * kxy.rows).sum().item()
        ac = x_dot / (n * (n - 1) * m)  # E k(x,x') k(x,y)
        mu_ac = (kxx.total * kxy.total - 2 * x_dot) / (n * (n - 1) * (n - 2) * m)  # E k(x,x') E k(x'',y)
        y_dot = (kyy.rows * kxy.cols).sum().item()
        bc = y_dot / (m * (m - 1) * n)
        mu_bc = (kyy.total * kxy.total - 2 * y_dot) / (m * (m - 1) * (m - 2) * n)
        var_fx = (a1 - 2 * ac + c10) - (mu_a_sq - 2 * mu_ac + mu_c_sq)
        var_fy = (b1 - 2 * bc + c01) - (mu_b_sq - 2 * mu_bc + mu_c_sq)
        variance = second_order + max(4 / n * var_fx + 4 / m * var_fy, 0.0)
    return Estimate(float(estimate), math.sqrt(max(variance, 0.0)) if math.isfinite(variance) else math.nan)


# ----------------------------------------------------------------------------- energy distance

def _mean_distance(a: torch.Tensor, b: torch.Tensor, batch_size: int, same: bool) -> float:
    total = torch.zeros((), dtype=torch.float64)
    for i0, i1 in _blocks(a.shape[0], batch_size):
        for j0, j1 in _blocks(b.shape[0], batch_size):
            if same and j0 < i0:
                continue
            weight = 2.0 if same and j0 != i0 else 1.0  # symmetric: the block below the diagonal is the transpose
            block = _distances(a[i0:i1], b[j0:j1])
            if same and i0 == j0:
                block.fill_diagonal_(0.0)  # exactly 0, not the square root of a rounding error
            total += weight * block.sum()
    return float(total) / (a.shape[0] * b.shape[0])


def energy_distance(x, y, batch_size: int = DEFAULT_BATCH_SIZE) -> float:
    r"""Energy distance between the empirical distributions of ``x`` (n, D) and ``y`` (m, D).

    .. math::

        \mathcal E(x, y) = \Big(2\,\overline{|x - y|} - \overline{|x - x'|} - \overline{|y - y'|}\Big)^{1/2},

    where the bars are averages over *all* pairs (:math:`n m`, :math:`n^2` and :math:`m^2`
    pairs, the zero diagonal included: V-statistics) and :math:`|\cdot|` is the Euclidean norm
    (Székely and Rizzo, 2013). In one dimension this is exactly ``scipy.stats.energy_distance``,
    :math:`\sqrt{2\int (F_x - F_y)^2}`. It is a metric on distributions; as the distance between
    two empirical distributions it is never negative (rounding is clipped at 0), but it is a
    biased estimate of the population value, :math:`O(n^{-1/2})` for equal distributions.
    """
    x, y = _as_pair(x, y, min_points=1)
    batch_size = _check_batch_size(batch_size)
    x, y = _centred(x, y)
    squared = 2 * _mean_distance(x, y, batch_size, False) - _mean_distance(x, x, batch_size, True) - _mean_distance(y, y, batch_size, True)
    return math.sqrt(max(squared, 0.0))


# ----------------------------------------------------------------------------- permutation test

def two_sample_test(
    x, y, n_permutations: int = 200, bandwidth: float | None = None, seed: int = 0, batch_size: int = 1024
) -> float:
    r"""Permutation p-value of the unbiased :math:`\mathrm{MMD}^2` for :math:`H_0: p_x = p_y`.

    The pooled sample (n + m points) is relabelled ``n_permutations`` times uniformly at random
    (a ``torch.Generator`` seeded with ``seed``: deterministic); under :math:`H_0` every
    relabelling is equally likely, so

    .. math::

        p = \frac{1 + \#\{\pi : \widehat{\mathrm{MMD}}{}^2_u(\pi) \ge \widehat{\mathrm{MMD}}{}^2_u\}}{1 + P}

    is a valid p-value (:math:`\Pr(p \le \alpha) \le \alpha` under :math:`H_0`), with the
    smallest possible value :math:`1/(1+P)`. The bandwidth is fixed once from the pooled sample
    (``None``: :func:`median_bandwidth`), which does not depend on the labels. All relabellings
    are scored in one blocked pass over the pooled kernel matrix :math:`K`: for label indicator
    columns :math:`w_\pi` the within-x sum is :math:`w_\pi^\top K w_\pi` (the matrix product
    :math:`K W` accumulated block by block), the cross sum :math:`\mathbf 1^\top K w_\pi - w_\pi^\top K w_\pi`,
    and the within-y sum follows from the total. Cost :math:`O((n+m)^2 (D + P))`.
    """
    x, y = _as_pair(x, y)
    batch_size = _check_batch_size(batch_size)
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, int) or n_permutations < 1:
        raise ValueError(f"n_permutations must be a positive int, got {n_permutations!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    h = median_bandwidth(x, y) if bandwidth is None else _check_bandwidth(bandwidth)
    n, m = x.shape[0], y.shape[0]
    pooled = torch.cat([x, y])
    size = n + m
    generator = torch.Generator().manual_seed(seed)
    labels = torch.zeros(size, n_permutations + 1, dtype=torch.float64)  # column 0: the observed labels
    labels[:n, 0] = 1.0
    for p in range(1, n_permutations + 1):
        labels[torch.randperm(size, generator=generator)[:n], p] = 1.0

    left, right = _augment(pooled - pooled.mean(0), 1.0 / (2.0 * h**2))
    labels32 = labels.float()
    k_labels = torch.zeros_like(labels)  # K W (diagonal of K left out), accumulated in float64
    row_sums = torch.zeros(size, dtype=torch.float64)
    for i0, i1 in _blocks(size, batch_size):
        for j0, j1 in _blocks(size, batch_size):
            if j0 < i0:
                continue
            block = (left[i0:i1] @ right[j0:j1].T).clamp_max_(0.0).exp_()
            if i0 == j0:
                block.fill_diagonal_(0.0)
            # within one block the product with the 0/1 labels is summed in float32 (at most
            # batch_size terms in [0, 1]: relative error ~1e-7), the blocks in float64
            block32 = block.float()
            k_labels[i0:i1] += block32 @ labels32[j0:j1]
            row_sums[i0:i1] += block.sum(1)
            if j0 != i0:  # the transposed block below the diagonal
                k_labels[j0:j1] += block32.T @ labels32[i0:i1]
                row_sums[j0:j1] += block.sum(0)
    total = row_sums.sum()
    within_x = (labels * k_labels).sum(0)  # (P + 1,)
    cross = row_sums @ labels - within_x
    within_y = total - within_x - 2 * cross
    statistics = within_x / (n * (n - 1)) + within_y / (m * (m - 1)) - 2 * cross / (n * m)
    observed = statistics[0]
    # relative tolerance: ties from floating-point summation order count as "at least as large"
    tolerance = 1e-12 * max(1.0, float(statistics.abs().max()))
    exceed = int((statistics[1:] >= observed - tolerance).sum())
    return (1 + exceed) / (1 + n_permutations)


# ----------------------------------------------------------------------------- modes

@dataclass
class ModeReport:
    """Mode statistics of samples on a toy with known modes (see :func:`mode_coverage`).

    ``counts[k]`` is the number of *high-quality* samples (within ``n_std`` std of their nearest
    centre) assigned to mode ``k``; a mode is covered when ``counts[k] >= min_fraction * n_samples``.
    ``kl_to_uniform`` is :math:`\\mathrm{KL}(q\\,\\|\\,u) = \\log K - H(q)` of the normalised
    histogram :math:`q` of ``counts`` to the uniform distribution over the :math:`K` modes (NaN when
    no sample is high quality).
    """

    n_modes: int
    modes_covered: int
    high_quality_fraction: float
    kl_to_uniform: float
    counts: list = field(default_factory=list)
    min_fraction: float = 0.0
    n_samples: int = 0
    n_std: float = 3.0

    def as_dict(self) -> dict:
        return dict(
            n_modes=self.n_modes,
            modes_covered=self.modes_covered,
            high_quality_fraction=self.high_quality_fraction,
            kl_to_uniform=self.kl_to_uniform,
            counts=list(self.counts),
            min_fraction=self.min_fraction,
            n_samples=self.n_samples,
            n_std=self.n_std,
        )


def mode_coverage(samples, centers, std: float | None = None, min_fraction: float | None = None, n_std: float = 3.0) -> ModeReport:
    r"""Count the modes of a toy that ``samples`` (n, D) cover, and how well.

    ``centers`` is a ``(K, D)`` array of mode centres with isotropic std ``std``, or a toy with
    ``.centers()`` and ``.std`` (:class:`~gmcourse.toys.EightGaussians`,
    :class:`~gmcourse.toys.GaussianGrid`), in which case ``std`` must be omitted or agree.

    These are the statistics of the mode-collapse experiments of Metz et al. (2017) and
    Srivastava et al. (2017) ("modes covered", "high-quality samples"), with the coverage threshold
    made explicit.

    * Each sample is assigned to its nearest centre (Euclidean distance; ties go to the lower index).
    * It is *high quality* when it lies within ``n_std * std`` of that centre (default 3 std;
      for a 2D Gaussian that holds for a fraction :math:`1 - e^{-9/2} \approx 0.989` of the
      data's own samples).
    * Mode :math:`k` is *covered* when it receives at least ``min_fraction`` of all samples as
      high-quality samples. The default ``min_fraction=None`` means a quarter of the uniform
      share, :math:`1/(4K)`.
    * ``kl_to_uniform``: :math:`\mathrm{KL}(q\,\|\,u)` of the high-quality mode histogram to the
      uniform distribution, 0 for perfectly balanced modes, :math:`\log K` when all fall on one.
    """
    if hasattr(centers, "centers") and callable(centers.centers):
        toy = centers
        toy_std = float(toy.std)
        if std is not None and not math.isclose(float(std), toy_std):
            raise ValueError(f"std={std!r} disagrees with the toy's std={toy_std!r}; omit std when passing a toy")
        std = toy_std
        centers = toy.centers()
    if std is None:
        raise ValueError("std (the modes' standard deviation) is required when centers is an array")
    std = _check_bandwidth(std) if not isinstance(std, bool) else _check_bandwidth(std)
    centers = _as_points(centers, "centers", min_points=1)
    samples = _as_points(samples, "samples", min_points=1)
    if samples.shape[1] != centers.shape[1]:
        raise ValueError(f"samples and centers must have the same dimension, got {tuple(samples.shape)} and {tuple(centers.shape)}")
    if isinstance(n_std, bool) or not isinstance(n_std, (int, float)) or not (0 < n_std < math.inf):
        raise ValueError(f"n_std must be a positive finite number, got {n_std!r}")
    n_modes = centers.shape[0]
    if min_fraction is None:
        min_fraction = 1.0 / (4 * n_modes)
    if isinstance(min_fraction, bool) or not isinstance(min_fraction, (int, float)) or not (0 <= min_fraction <= 1):
        raise ValueError(f"min_fraction must be a number in [0, 1] or None (1 / (4 K)), got {min_fraction!r}")

    n = samples.shape[0]
    nearest = torch.empty(n, dtype=torch.long)
    distance = torch.empty(n, dtype=torch.float64)
    for i in range(0, n, DEFAULT_BATCH_SIZE):
        d = torch.cdist(samples[i : i + DEFAULT_BATCH_SIZE], centers, compute_mode="donot_use_mm_for_euclid_dist")
        distance[i : i + DEFAULT_BATCH_SIZE], nearest[i : i + DEFAULT_BATCH_SIZE] = d.min(dim=1)
    good = distance <= n_std * std
    counts = torch.bincount(nearest[good], minlength=n_modes)
    # covered: counts_k / n >= min_fraction, compared as integers up to rounding of min_fraction * n
    threshold = min_fraction * n
    covered = int((counts.double() >= threshold * (1 - 1e-12)).sum())
    n_good = int(good.sum())
    if n_good > 0:
        q = counts.double() / n_good
        positive = q > 0
        kl = float((q[positive] * torch.log(q[positive] * n_modes)).sum())
    else:
        kl = math.nan
    return ModeReport(
        n_modes=n_modes,
        modes_covered=covered,
        high_quality_fraction=n_good / n,
        kl_to_uniform=kl,
        counts=[int(c) for c in counts],
        min_fraction=float(min_fraction),
        n_samples=n,
        n_std=float(n_std),
    )


# ----------------------------------------------------------------------------- digits

CLASSIFIER_TRAIN_SIZE = 1000  # training digits the classifier is fitted on; the other 500 are the floor
CLASSIFIER_HIDDEN = 32  # width of the feature layer
N_CLASSES = 10


@dataclass(frozen=True)
class DigitClassifier:
    """A one-hidden-layer tanh MLP on (n, 64) pixel values in [0, 1] (NumPy float64 weights).

    ``features(x)`` is the hidden layer :math:`\tanh(xW_1 + b_1)`, shape ``(n, 32)``;
    ``predict(x)`` the most probable digit. ``test_accuracy`` is measured on the 297 test digits.
    """

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    test_accuracy: float

    def features(self, x) -> np.ndarray:
        x = _as_digit_pixels(x)
        return np.tanh(x @ self.w1 + self.b1)

    def logits(self, x) -> np.ndarray:
        return self.features(x) @ self.w2 + self.b2

    def predict(self, x) -> np.ndarray:
        return self.logits(x).argmax(axis=1)


def _as_digit_pixels(x) -> np.ndarray:
    """``x`` as (n, 64) float64 NumPy pixel values; accepts (n, 64) or (n, 8, 8) tensors/arrays."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bool or x.is_complex():
            raise ValueError(f"digit samples must hold real pixel values, got dtype {x.dtype}")
        x = x.double().numpy()
    else:
        try:
            x = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"digit samples must be an array of pixel values, got {type(x).__name__}") from err
    if x.ndim == 3 and x.shape[1:] == (8, 8):
        x = x.reshape(x.shape[0], 64)
    if x.ndim != 2 or x.shape[1] != 64:
        raise ValueError(f"digit samples must have shape (n, 64) or (n, 8, 8), got {tuple(x.shape)}")
    if x.shape[0] < 1:
        raise ValueError("digit samples must hold at least one image")
    if not np.isfinite(x).all():
        raise ValueError("digit samples contain NaN or infinite values")
    if x.min() < -0.5 or x.max() > 1.5:
        raise ValueError(
            f"digit pixel values must lie in [0, 1] (levels / 16, the 'float' form); got values in "
            f"[{x.min():.3g}, {x.max():.3g}] (grey levels 0..16 must be divided by 16)"
        )
    return x


@functools.lru_cache(maxsize=1)
def digit_classifier() -> DigitClassifier:
    """The feature extractor and label classifier of the digit scores (fitted once, cached).

    scikit-learn's ``MLPClassifier(hidden_layer_sizes=(32,), activation="tanh", solver="lbfgs",
    alpha=0.1, random_state=0)`` fitted on the first 1,000 training digits (``"float"`` form):
    full-batch L-BFGS from a seeded initialisation, so deterministic (bit for bit on a given
    machine and BLAS thread count), and about a second of CPU. The tanh layer of width 32 keeps
    every feature smooth and active, so the 32 x 32 feature covariance of a few hundred images is
    well conditioned. Its accuracy on the 297 test digits is stored in ``test_accuracy``.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    from .digits import load_digits

    images, labels = load_digits("train", "float", flatten=True)
    x = images[:CLASSIFIER_TRAIN_SIZE].double().numpy()
    y = labels[:CLASSIFIER_TRAIN_SIZE].numpy()
    model = MLPClassifier(
        hidden_layer_sizes=(CLASSIFIER_HIDDEN,), activation="tanh", solver="lbfgs", alpha=0.1, max_iter=2000, random_state=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # never return a half-fitted classifier
        model.fit(x, y)
    test_images, test_labels = load_digits("test", "float", flatten=True)
    accuracy = float(model.score(test_images.double().numpy(), test_labels.numpy()))
    w1, w2 = (np.array(w, dtype=np.float64) for w in model.coefs_)
    b1, b2 = (np.array(b, dtype=np.float64) for b in model.intercepts_)
    for array in (w1, b1, w2, b2):
        array.setflags(write=False)  # the cache is shared
    return DigitClassifier(w1=w1, b1=b1, w2=w2, b2=b2, test_accuracy=accuracy)


def digit_features(samples) -> np.ndarray:
    """Hidden-layer features ``(n, 32)`` float64 of :func:`digit_classifier` for (n, 64) or (n, 8, 8) images."""
    return digit_classifier().features(samples)


@functools.lru_cache(maxsize=1)
def _reference_statistics() -> tuple[np.ndarray, np.ndarray]:
    from .digits import load_digits

    test_images, _ = load_digits("test", "float", flatten=True)
    features = digit_features(test_images)
    return features.mean(0), np.cov(features, rowvar=False)


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    r"""Fréchet (2-Wasserstein squared) distance between :math:`\mathcal N(\mu_1, \Sigma_1)` and :math:`\mathcal N(\mu_2, \Sigma_2)`.

    .. math::

        \mathrm{FD} = |\mu_1 - \mu_2|^2 + \mathrm{tr}\Big(\Sigma_1 + \Sigma_2
            - 2\big(\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}\big)^{1/2}\Big)

    (Dowson and Landau, 1982; the FID of Heusel et al., 2017, evaluates it on Inception features).
    The square roots are taken by symmetric eigendecompositions in float64 (eigenvalues below 0,
    from rounding, are set to 0), so the result is real; it is symmetric in the two Gaussians
    (:math:`\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}` and :math:`\Sigma_2^{1/2}\Sigma_1\Sigma_2^{1/2}`
    have the same eigenvalues) and clipped at 0 against rounding. In 1D it is
    :math:`(\mu_1 - \mu_2)^2 + (\sigma_1 - \sigma_2)^2`.
    """
    mu1, mu2 = (np.atleast_1d(np.asarray(m, dtype=np.float64)) for m in (mu1, mu2))
    cov1, cov2 = (np.atleast_2d(np.asarray(c, dtype=np.float64)) for c in (cov1, cov2))
    d = mu1.shape[0]
    if mu1.ndim != 1 or mu2.shape != (d,):
        raise ValueError(f"mu1 and mu2 must be vectors of the same length, got shapes {mu1.shape} and {mu2.shape}")
    for name, cov in (("cov1", cov1), ("cov2", cov2)):
        if cov.shape != (d, d):
            raise ValueError(f"{name} must have shape ({d}, {d}) to match the means, got {cov.shape}")
        if not np.isfinite(cov).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        if not np.allclose(cov, cov.T, rtol=1e-8, atol=1e-12 * max(1.0, np.abs(cov).max())):
            raise ValueError(f"{name} must be symmetric (a covariance matrix)")
    if not (np.isfinite(mu1).all() and np.isfinite(mu2).all()):
        raise ValueError("mu1 and mu2 must be finite")
    cov1, cov2 = (cov1 + cov1.T) / 2, (cov2 + cov2.T) / 2
    values, vectors = np.linalg.eigh(cov1)
    if values.min() < -1e-8 * max(1.0, values.max()):
        raise ValueError(f"cov1 must be positive semi-definite, got an eigenvalue {values.min():.3g}")
    if np.linalg.eigvalsh(cov2).min() < -1e-8 * max(1.0, np.abs(cov2).max()):
        raise ValueError("cov2 must be positive semi-definite")
    sqrt1 = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    inner = sqrt1 @ cov2 @ sqrt1
    inner_values = np.linalg.eigvalsh((inner + inner.T) / 2)
    trace_sqrt = np.sqrt(np.clip(inner_values, 0, None)).sum()
    distance = float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt)
    return max(distance, 0.0)


def frechet_distance_between(features1, features2) -> float:
    """:func:`frechet_distance` between the Gaussians fitted to two feature samples ``(n1, d)`` and ``(n2, d)``.

    Means and unbiased covariances (``ddof=1``) of each sample. It is a biased estimate of the
    population value: even for two samples of one distribution it is positive, decreasing like
    :math:`1/n` (compare scores at equal sample sizes).
    """
    f1, f2 = (_as_points(f, name).numpy() for f, name in ((features1, "features1"), (features2, "features2")))
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"features1 and features2 must have the same dimension, got {f1.shape} and {f2.shape}")
    return frechet_distance(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))


def _label_entropy(counts: np.ndarray) -> float:
    q = counts / counts.sum()
    q = q[q > 0]
    return float(-(q * np.log(q)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0


def digit_scores(samples) -> dict:
    r"""Scores of digit ``samples`` ((n, 64) or (n, 8, 8), pixel values in [0, 1]) against real test digits.

    Returns a dict with

    * ``frechet_distance``: :func:`frechet_distance_between` the classifier features
      (:func:`digit_features`, width 32) of the 297 test digits and of the samples (lower is
      better; compare with :func:`digit_floor` at the same ``n``);
    * ``label_entropy``: the entropy (nats) of the histogram of predicted labels, at most
      :math:`\log 10 pprox 2.303` when all ten digits appear equally often, 0 when one digit is
      produced (mode collapse);
    * ``label_counts``: the histogram, a list of 10 ints; ``n_samples``.

    Values outside [0, 1] by a little (a diffusion sampler's overshoot) are scored as they are;
    far outside (e.g. grey levels 0..16) raise a ``ValueError``. Needs at least 2 samples.
    """
    features = digit_features(samples)
    if features.shape[0] < 2:
        raise ValueError("digit_scores needs at least 2 samples for a covariance")
    mu_ref, cov_ref = _reference_statistics()
    distance = frechet_distance(features.mean(0), np.cov(features, rowvar=False), mu_ref, cov_ref)
    classifier = digit_classifier()
    counts = np.bincount((features @ classifier.w2 + classifier.b2).argmax(1), minlength=N_CLASSES)
    return dict(
        frechet_distance=distance,
        label_entropy=_label_entropy(counts),
        label_counts=[int(c) for c in counts],
        n_samples=int(features.shape[0]),
    )


def digit_floor(n: int = 500) -> dict:
    """:func:`digit_scores` of ``n`` held-out real digits: what a perfect sampler gets.

    The digits are the last 500 of the training split (indices 1,000..1,499), never seen by the
    classifier and independent of the test digits used as the reference; ``n`` (2..500) takes
    the first ``n`` of them. The Fréchet distance of a finite sample is biased upwards by
    roughly :math:`1/n`, so compare a model at the same ``n`` (e.g. ``digit_scores(samples[:500])``).
    """
    from .digits import N_TRAIN, load_digits

    available = N_TRAIN - CLASSIFIER_TRAIN_SIZE
    if isinstance(n, bool) or not isinstance(n, int) or not (2 <= n <= available):
        raise ValueError(f"n must be an int between 2 and {available} (the held-out real digits), got {n!r}")
    images, _ = load_digits("train", "float", flatten=True)
    return digit_scores(images[CLASSIFIER_TRAIN_SIZE : CLASSIFIER_TRAIN_SIZE + n])
