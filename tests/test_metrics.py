"""Tests for gmcourse.metrics: MMD^2 and its standard error, energy distance, permutation test,
mode coverage, Fréchet distance and the digit scores.

Statistical checks use tolerances of 5 standard errors, each derived next to the assertion.
"""

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

from gmcourse.digits import load_digits
from gmcourse.metrics import (
    ModeReport,
    digit_classifier,
    digit_floor,
    digit_scores,
    energy_distance,
    frechet_distance,
    frechet_distance_between,
    median_bandwidth,
    mode_coverage,
    mmd2,
    two_sample_test,
)
from gmcourse.toys import EightGaussians, GaussianGrid


def gaussian(n, d, seed, shift=0.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


# ----------------------------------------------------------------------------- MMD^2

def test_mmd2_is_the_u_statistic_of_a_double_loop():
    x, y = gaussian(7, 3, 0), gaussian(9, 3, 1, shift=0.3)
    h = 1.3

    def k(a, b):
        return math.exp(-((a - b) ** 2).sum().item() / (2 * h * h))

    within_x = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    within_y = sum(k(y[i], y[j]) for i in range(9) for j in range(9) if i != j) / (9 * 8)
    cross = sum(k(x[i], y[j]) for i in range(7) for j in range(9)) / (7 * 9)
    expected = within_x + within_y - 2 * cross
    for batch_size in (1024, 4, 2):  # one block, uneven blocks, many blocks
        assert mmd2(x, y, bandwidth=h, batch_size=batch_size).mean == pytest.approx(expected, rel=1e-12)
    # the median heuristic is used when no bandwidth is given
    assert mmd2(x, y).mean == pytest.approx(mmd2(x, y, bandwidth=median_bandwidth(x, y)).mean, rel=1e-12)


def test_mmd2_blocked_and_single_block_agree_on_a_larger_sample():
    x, y = gaussian(1500, 64, 2), gaussian(1300, 64, 3, shift=0.05)
    one = mmd2(x, y, batch_size=4096, stderr="full")
    many = mmd2(x, y, batch_size=500, stderr="full")
    assert one.mean == pytest.approx(many.mean, rel=1e-9, abs=1e-15)
    assert one.stderr == pytest.approx(many.stderr, rel=1e-9)


def test_mmd2_of_tiny_samples_has_a_mean_but_no_standard_error():
    # the unbiased variance needs four distinct points per sample
    for kind in ("null", "full"):
        estimate = mmd2(gaussian(2, 2, 0), gaussian(3, 2, 1), bandwidth=1.0, stderr=kind)
        assert math.isfinite(estimate.mean) and math.isnan(estimate.stderr)
        assert math.isfinite(mmd2(gaussian(4, 2, 0), gaussian(4, 2, 1), bandwidth=1.0, stderr=kind).stderr)


def test_median_bandwidth_is_the_median_pairwise_distance():
    x, y = gaussian(30, 2, 4), gaussian(20, 2, 5)
    pooled = torch.cat([x, y]).numpy()
    expected = np.median(scipy.spatial.distance.pdist(pooled))
    assert median_bandwidth(x, y) == pytest.approx(expected, rel=1e-12)
    # deterministic subset when thinned
    assert median_bandwidth(x, y, max_points=10) == median_bandwidth(x, y, max_points=10)


@pytest.mark.parametrize("seed", range(5))
def test_mmd2_of_one_distribution_is_zero_within_five_standard_errors(seed):
    toy = EightGaussians()
    estimate = mmd2(toy.sample(1000, seed=seed), toy.sample(800, seed=100 + seed))
    assert abs(estimate.mean) < 5 * estimate.stderr, estimate


@pytest.mark.parametrize("seed", range(3))
def test_mmd2_of_a_shifted_distribution_is_many_standard_errors_above_zero(seed):
    toy = EightGaussians()  # modes of std 0.1 on a ring of radius 2
    x, y = toy.sample(1000, seed=seed), toy.sample(1000, seed=100 + seed)
    # The median heuristic picks h ~ 2.8 (distances between modes): a shift of 5 mode std is needed ...
    estimate = mmd2(x, y + torch.tensor([0.5, 0.0]))
    assert estimate.mean > 10 * estimate.stderr, estimate
    full = mmd2(x, y + torch.tensor([0.5, 0.0]), stderr="full")
    assert full.mean == estimate.mean and full.stderr >= estimate.stderr
    # ... while a bandwidth at the scale of the modes sees a shift of one mode std.
    sharp = mmd2(x, y + torch.tensor([0.1, 0.0]), bandwidth=toy.std)
    assert sharp.mean > 10 * sharp.stderr, sharp


def spread_and_reported_variances(shift, repetitions, n, m):
    """Observed variance of the estimates and mean reported variances ("null" and "full"), each with its standard error.

    The standard errors of these averages come from their own spreads over the repetitions (the
    fourth moment of a heavy-tailed null distribution included).
    """
    estimates, reported = [], {"null": [], "full": []}
    for r in range(repetitions):
        x, y = gaussian(n, 2, 2 * r), gaussian(m, 2, 2 * r + 1, shift=shift)
        for kind in reported:
            e = mmd2(x, y, bandwidth=1.0, stderr=kind)
            reported[kind].append(e.stderr**2)
        estimates.append(e.mean)
    deviations2 = (np.array(estimates) - np.mean(estimates)) ** 2
    observed = (deviations2.sum() / (repetitions - 1), deviations2.std(ddof=1) / math.sqrt(repetitions))
    means = {kind: (np.mean(v), np.std(v, ddof=1) / math.sqrt(repetitions)) for kind, v in reported.items()}
    return observed, means


def test_standard_errors_match_the_spread_under_the_null():
    # Under H0 the "null" variance is an unbiased estimate of the exact variance of the degenerate
    # U-statistic: its mean over repetitions must agree with the observed variance within 5 standard
    # errors of the difference (the two errors added in quadrature: conservative, as they correlate).
    (observed, observed_se), reported = spread_and_reported_variances(0.0, repetitions=200, n=100, m=150)
    null, null_se = reported["null"]
    print(f"H0: observed variance {observed:.3g} +- {observed_se:.2g}, null {null:.3g} +- {null_se:.2g}, full {reported['full'][0]:.3g}")
    assert abs(observed - null) < 5 * math.hypot(observed_se, null_se)
    # "full" adds a clipped estimate of a first-order part that is 0 here: conservative under H0
    full, full_se = reported["full"]
    assert full > observed - 5 * math.hypot(observed_se, full_se)


def test_full_standard_error_matches_the_spread_under_an_alternative():
    (observed, observed_se), reported = spread_and_reported_variances(0.5, repetitions=200, n=150, m=100)
    full, full_se = reported["full"]
    null, null_se = reported["null"]
    print(f"H1: observed variance {observed:.3g} +- {observed_se:.2g}, full {full:.3g} +- {full_se:.2g}, null {null:.3g}")
    assert abs(observed - full) < 5 * math.hypot(observed_se, full_se)
    # the null variance alone misses the first-order part that an alternative adds
    assert observed - null > 5 * math.hypot(observed_se, null_se)


# ----------------------------------------------------------------------------- energy distance

@pytest.mark.parametrize(("n", "m", "shift"), [(50, 70, 0.0), (400, 300, 0.5), (1, 5, 2.0)])
def test_energy_distance_matches_scipy_in_one_dimension(n, m, shift):
    x, y = gaussian(n, 1, 6), gaussian(m, 1, 7, shift=shift)
    expected = scipy.stats.energy_distance(x[:, 0].numpy(), y[:, 0].numpy())
    assert energy_distance(x, y) == pytest.approx(expected, rel=1e-7, abs=1e-7)
    assert energy_distance(x, y, batch_size=16) == pytest.approx(expected, rel=1e-7, abs=1e-7)


def test_energy_distance_in_many_dimensions_is_symmetric_and_zero_for_identical_samples():
    x, y = gaussian(200, 5, 8), gaussian(150, 5, 9, shift=0.2)
    assert energy_distance(x, y) == pytest.approx(energy_distance(y, x), rel=1e-12)
    # identical samples: the squared distance is 0 up to rounding of the Gram-trick distances
    # (~1e-10 here), which the square root lifts to ~1e-5
    assert energy_distance(x, x) < 1e-4
    # rotation invariance: the same value after an orthogonal transformation
    q, _ = torch.linalg.qr(gaussian(5, 5, 10))
    assert energy_distance(x @ q, y @ q) == pytest.approx(energy_distance(x, y), rel=1e-9)


# ----------------------------------------------------------------------------- permutation test

def test_two_sample_test_rejects_different_distributions():
    x, y = gaussian(200, 2, 11), gaussian(200, 2, 12, shift=0.5)
    assert two_sample_test(x, y, n_permutations=199) == 1 / 200  # no relabelling beats the truth
    assert two_sample_test(x, y, n_permutations=199, seed=3) == 1 / 200


def test_two_sample_test_p_values_are_roughly_uniform_for_equal_distributions():
    # 40 independent equal-distribution pairs: under H0 each p-value is (discretely) uniform,
    # so their mean is 0.5 +- sqrt(1/12 / 40) = 0.046 and the number below 0.05 is binomial(40, 0.05).
    p_values = np.array([two_sample_test(gaussian(40, 2, 20 + 2 * r), gaussian(40, 2, 21 + 2 * r), n_permutations=99) for r in range(40)])
    print("p-values:", np.round(np.sort(p_values), 2))
    assert abs(p_values.mean() - 0.5) < 5 * math.sqrt(1 / 12 / 40)
    assert (p_values <= 0.05).sum() <= 40 * 0.05 + 5 * math.sqrt(40 * 0.05 * 0.95)
    assert p_values.min() >= 1 / 100


def test_two_sample_test_is_deterministic_given_the_seed():
    x, y = gaussian(60, 3, 30), gaussian(50, 3, 31, shift=0.1)
    assert two_sample_test(x, y, seed=5) == two_sample_test(x, y, seed=5)
    assert two_sample_test(x, y, seed=5, batch_size=7) == two_sample_test(x, y, seed=5)


# ----------------------------------------------------------------------------- modes

def test_mode_coverage_counts_constructed_samples_exactly():
    toy = EightGaussians()  # std 0.1, radius 2
    centres = toy.centers()
    outward = centres / centres.norm(dim=1, keepdim=True)
    samples = torch.cat([
        centres[0].repeat(400, 1),  # mode 0: 400 on the centre
        (centres[1] + 2.9 * toy.std * outward[1]).repeat(25, 1),  # mode 1: 25 within 3 std (exactly the threshold)
        (centres[2] - 2.0 * toy.std * outward[2]).repeat(24, 1),  # mode 2: 24, one short of it
        (centres[3] + 3.1 * toy.std * outward[3]).repeat(100, 1),  # near mode 3 but outside 3 std: low quality
        torch.zeros(251, 2),  # far from every mode (20 std)
    ])
    report = mode_coverage(samples, toy)  # min_fraction 1 / (4 * 8) of 800 samples = 25
    assert isinstance(report, ModeReport)
    assert report.n_modes == 8 and report.n_samples == 800 and report.min_fraction == 1 / 32
    assert report.counts == [400, 25, 24, 0, 0, 0, 0, 0]
    assert report.modes_covered == 2
    assert report.high_quality_fraction == 449 / 800
    q = np.array([400, 25, 24]) / 449
    assert report.kl_to_uniform == pytest.approx(float((q * np.log(8 * q)).sum()), rel=1e-12)
    # the same with explicit centres and std, and a threshold that admits mode 2
    explicit = mode_coverage(samples, centres, std=0.1, min_fraction=24 / 800)
    assert explicit.counts == report.counts and explicit.modes_covered == 3
    # a wider quality radius takes the 3.1 std samples in
    assert mode_coverage(samples, toy, n_std=3.2).counts == [400, 25, 24, 100, 0, 0, 0, 0]


def test_mode_coverage_of_the_toys_own_samples():
    # For 2D Gaussian modes a sample is within 3 std with probability 1 - exp(-9/2) = 0.98889.
    for toy, n in ((EightGaussians(), 8000), (GaussianGrid(), 10_000)):
        report = mode_coverage(toy.sample(n, seed=40), toy)
        p = 1 - math.exp(-4.5)
        assert report.modes_covered == report.n_modes
        assert abs(report.high_quality_fraction - p) < 5 * math.sqrt(p * (1 - p) / n)
        # KL of a multinomial histogram to uniform: about (K - 1) / (2 n_good) on average
        assert report.kl_to_uniform < 5 * (report.n_modes - 1) / (2 * sum(report.counts))


def test_mode_coverage_of_a_collapsed_sampler():
    toy = GaussianGrid()
    one_mode = toy.centers()[7] + toy.std * gaussian(1000, 2, 41)
    report = mode_coverage(one_mode, toy)
    assert report.modes_covered == 1 and report.counts[7] == sum(report.counts)
    assert report.kl_to_uniform == pytest.approx(math.log(25), rel=1e-12)
    nothing = mode_coverage(torch.full((10, 2), 10.0), toy)
    assert nothing.modes_covered == 0 and nothing.high_quality_fraction == 0 and math.isnan(nothing.kl_to_uniform)


# ----------------------------------------------------------------------------- Fréchet distance

def test_frechet_distance_closed_forms():
    # 1D: (mu1 - mu2)^2 + (s1 - s2)^2
    assert frechet_distance([0.5], [[4.0]], [-1.0], [[0.25]]) == pytest.approx(1.5**2 + 1.5**2, rel=1e-12)
    # diagonal covariances: the sum over coordinates
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([3.0, 0.1, 0.5])
    m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, -1.0])
    expected = ((m1 - m2) ** 2).sum() + ((s1 - s2) ** 2).sum()
    assert frechet_distance(m1, np.diag(s1**2), m2, np.diag(s2**2)) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_general_case_against_scipy_and_symmetry():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    c1, c2 = a @ a.T, b @ b.T
    m1, m2 = rng.normal(size=6), rng.normal(size=6)
    expected = ((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2).real)
    ours = frechet_distance(m1, c1, m2, c2)
    assert isinstance(ours, float)
    assert ours == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(m2, c2, m1, c1) == pytest.approx(ours, rel=1e-12)
    assert frechet_distance(m1, c1, m1, c1) == pytest.approx(0.0, abs=1e-10)
    # singular (rank-deficient) covariances are fine: real and non-negative
    low = a[:, :2] @ a[:, :2].T
    value = frechet_distance(m1, low, m1, low)
    assert 0.0 <= value < 1e-6


def test_frechet_distance_between_large_samples_approaches_the_closed_form():
    # Ten independent pairs of 5,000-point samples of two 3D Gaussians. The estimate is biased by
    # O(tr(S1 + S2) / n) (the squared error of the means adds tr(S1)/n + tr(S2)/n on average, the
    # covariance term is of the same order) and fluctuates; allow 5 standard errors of the mean
    # of the ten estimates plus twice that bias scale.
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    m1, m2 = np.array([0.0, 1.0, -1.0]), np.array([0.5, 0.5, 0.0])
    c1, c2 = a @ a.T + 0.1 * np.eye(3), b @ b.T + 0.1 * np.eye(3)
    exact = frechet_distance(m1, c1, m2, c2)
    n = 5000
    estimates = [
        frechet_distance_between(rng.multivariate_normal(m1, c1, size=n), rng.multivariate_normal(m2, c2, size=n))
        for _ in range(10)
    ]
    bias_scale = np.trace(c1 + c2) / n
    tolerance = 5 * np.std(estimates, ddof=1) / math.sqrt(10) + 2 * bias_scale
    print(f"exact {exact:.4f}, estimates {np.mean(estimates):.4f} +- {np.std(estimates, ddof=1) / math.sqrt(10):.4f}")
    assert abs(np.mean(estimates) - exact) < tolerance


# ----------------------------------------------------------------------------- digits

def test_digit_classifier_is_accurate_on_test_digits():
    classifier = digit_classifier()
    images, labels = load_digits("test", "float", flatten=True)
    accuracy = float((classifier.predict(images) == labels.numpy()).mean())
    print(f"classifier test accuracy {accuracy:.4f}")
    assert accuracy == classifier.test_accuracy
    # Measured 0.970 on the 297 test digits; one binomial standard deviation there is
    # sqrt(0.97 * 0.03 / 297) = 0.0099, so a sound classifier sits above 0.95 (two of them below).
    assert accuracy > 0.95
    assert classifier.features(images).shape == (297, 32)


def test_digit_floor_covers_all_ten_digits():
    floor = digit_floor()
    print("floor:", floor)
    assert floor["n_samples"] == 500 and len(floor["label_counts"]) == 10 and sum(floor["label_counts"]) == 500
    # The ten classes are balanced in the data; for 500 draws the entropy deficit of the histogram is
    # about chi^2_9 / (2 n), with chi^2_9 below 9 + 5 sqrt(18) = 30: a deficit under 0.03 (plus 0.01 for
    # the few misclassified digits).
    assert floor["label_entropy"] > math.log(10) - 0.04
    assert floor["frechet_distance"] >= 0


def test_one_repeated_digit_has_zero_label_entropy_and_a_large_frechet_distance():
    images, labels = load_digits("train", "float", flatten=True)
    threes = images[:1000][labels[:1000] == 3]  # digits the classifier was fitted on
    scores = digit_scores(threes.reshape(-1, 8, 8))  # (n, 8, 8) is accepted too
    floor = digit_floor()
    print("one class:", scores)
    # with at least 95 % of them classified as 3, the entropy is below H(0.95) + 0.05 log 9 = 0.31
    assert scores["label_entropy"] < 0.31
    assert max(scores["label_counts"]) >= 0.95 * scores["n_samples"]
    assert scores["frechet_distance"] > 10 * floor["frechet_distance"]


def test_digit_scores_are_deterministic():
    samples = torch.rand(300, 64, generator=torch.Generator().manual_seed(0))
    first = digit_scores(samples)
    assert first == digit_scores(samples.clone())
    assert digit_floor(200) == digit_floor(200)


@pytest.mark.slow
def test_digit_classifier_refit_gives_identical_weights():
    before = digit_classifier()
    digit_classifier.cache_clear()
    after = digit_classifier()
    for name in ("w1", "b1", "w2", "b2"):
        np.testing.assert_array_equal(getattr(before, name), getattr(after, name))


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: mmd2(torch.zeros(5), torch.zeros(5, 1)), r"x must have shape \(n, D\)"),
        (lambda: mmd2(torch.zeros(5, 2), torch.zeros(5, 3)), "same dimension D"),
        (lambda: mmd2(torch.zeros(1, 2), torch.zeros(5, 2)), "at least 2 points"),
        (lambda: mmd2(torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), torch.zeros(5, 2)), "NaN or infinite"),
        (lambda: mmd2(gaussian(5, 2, 0), gaussian(5, 2, 1), bandwidth=-1.0), "bandwidth must be a positive"),
        (lambda: mmd2(gaussian(5, 2, 0), gaussian(5, 2, 1), batch_size=0), "batch_size must be a positive int"),
        (lambda: mmd2(gaussian(5, 2, 0), gaussian(5, 2, 1), stderr="both"), "stderr must be 'null'"),
        (lambda: median_bandwidth(torch.zeros(5, 2), torch.zeros(5, 2)), "median pairwise distance .* is 0"),
        (lambda: energy_distance(torch.zeros(5, 2), torch.zeros(5, 3)), "same dimension D"),
        (lambda: energy_distance(torch.zeros(0, 2), torch.zeros(5, 2)), "at least 1 points"),
        (lambda: two_sample_test(gaussian(5, 2, 0), gaussian(5, 2, 1), n_permutations=0), "n_permutations must be"),
        (lambda: mode_coverage(torch.zeros(5, 2), torch.zeros(3, 2)), "std .* is required"),
        (lambda: mode_coverage(torch.zeros(5, 3), torch.zeros(3, 2), std=0.1), "same dimension"),
        (lambda: mode_coverage(torch.zeros(5, 2), EightGaussians(), std=0.5), "disagrees with the toy's std"),
        (lambda: mode_coverage(torch.zeros(5, 2), EightGaussians(), min_fraction=1.5), "min_fraction must be"),
        (lambda: frechet_distance([0.0, 1.0], np.eye(2), [0.0], np.eye(1)), "same length"),
        (lambda: frechet_distance([0.0], [[-1.0]], [0.0], [[1.0]]), "positive semi-definite"),
        (lambda: frechet_distance([0.0, 0.0], np.array([[1.0, 0.5], [0.0, 1.0]]), [0.0, 0.0], np.eye(2)), "symmetric"),
        (lambda: frechet_distance_between(np.zeros((5, 2)), np.zeros((5, 3))), "same dimension"),
        (lambda: digit_scores(torch.zeros(10, 63)), r"shape \(n, 64\) or \(n, 8, 8\)"),
        (lambda: digit_scores(16 * torch.ones(10, 64)), "divided by 16"),
        (lambda: digit_scores(torch.full((10, 64), float("nan"))), "NaN or infinite"),
        (lambda: digit_floor(n=501), "between 2 and 500"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
