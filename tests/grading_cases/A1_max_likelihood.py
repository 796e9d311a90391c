"""Classic wrong answers for A1 and the exact score each must get, and correct alternatives.

Each wrong answer loses the points of every test cell it fails, including later parts that
call it (Part 9 uses Parts 4 and 8; the experiment uses Parts 4, 6, 8 and 9). Each of
CORRECT_ANSWERS must get full marks.
"""

ASSIGNMENT = "A1_max_likelihood"
NOTEBOOK = "A1_max_likelihood.ipynb"
MAX_SCORE = 24.0

WRONG_ANSWERS = {
    # 0 log 0 typed literally: nan as soon as one probability is 0 (hidden entropy test, 1 point)
    "entropy_without_zero_log_zero": (
        {"entropy": "def entropy(p):\n    return -(p * p.log()).sum(dim=-1)\n"},
        23.0,
    ),
    # bits instead of nats (visible 1 + hidden 1)
    "entropy_in_bits": (
        {"entropy": "def entropy(p):\n    return -torch.xlogy(p, p).sum(dim=-1) / math.log(2)\n"},
        22.0,
    ),
    # KL(q || p) instead of KL(p || q) (visible 1 + hidden 2)
    "kl_swapped_arguments": (
        {"kl_divergence": "def kl_divergence(p, q):\n    return (torch.xlogy(q, q) - torch.xlogy(q, p)).sum(dim=-1)\n"},
        21.0,
    ),
    # -z^2 instead of -z^2 / 2: Part 4 (3), Part 5 (2), Part 9 (1 + 1), experiment (2)
    "gaussian_log_prob_missing_half": (
        {"gaussian_log_prob": (
            "def gaussian_log_prob(x, mean, std):\n"
            "    z = (x - mean) / std\n"
            "    return (-z**2 - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(dim=-1)\n")},
        15.0,
    ),
    # summed NLL instead of nats per data point (hidden NLL test, 1)
    "nll_sum_instead_of_mean": (
        {"gaussian_nll": "def gaussian_nll(x, mean, std):\n    return -gaussian_log_prob(x, mean, std).sum()\n"},
        23.0,
    ),
    # torch.std's default 1/(n-1) variance is not the maximum-likelihood one (visible fit test, 1, and
    # hidden, 2); on 2000 points the experiment cannot tell the difference, and rightly does not
    "fit_unbiased_variance": (
        {"fit_gaussian": "def fit_gaussian(x):\n    return x.mean(dim=0), x.std(dim=0)\n"},
        21.0,
    ),
    # treats logvar as log sigma; agrees whenever logvar = 0 (hidden Gaussian KL test, 2)
    "gaussian_kl_logvar_as_log_std": (
        {"gaussian_kl": (
            "def gaussian_kl(mu, logvar, mu_p=None, logvar_p=None):\n"
            "    if mu_p is None:\n"
            "        mu_p = torch.zeros_like(mu)\n"
            "    if logvar_p is None:\n"
            "        logvar_p = torch.zeros_like(logvar)\n"
            "    std, std_p = logvar.exp(), logvar_p.exp()\n"
            "    return (torch.log(std_p / std) + (std**2 + (mu - mu_p) ** 2) / (2 * std_p**2) - 0.5).sum(dim=-1)\n")},
        22.0,
    ),
    # the sample standard deviation instead of the standard error: Part 8 (1 + 1),
    # Part 9 hidden (1), experiment (2)
    "stderr_is_std": (
        {"monte_carlo_mean": (
            "def monte_carlo_mean(values):\n"
            "    return values.mean(dim=0), values.std(dim=0)\n")},
        19.0,
    ),
}


CORRECT_ANSWERS = {
    # the entropy from torch.distributions: 2.2e-16 instead of 0 for a deterministic distribution
    "entropy_via_torch_distributions": {
        "entropy": "def entropy(p):\n    return torch.distributions.Categorical(probs=p).entropy()\n"},
}
