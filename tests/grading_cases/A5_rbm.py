"""Classic wrong answers for A5 and the exact score each must get.

Each wrong answer loses the points of every test cell it fails, including later parts that call
it: ``cd_surrogate`` and ``log_partition`` (over the visible layer) use ``free_energy``; the samplers
use ``hidden_probs`` and ``visible_probs``; ``cd_negatives`` uses ``gibbs_step``; the experiment
(Part 7) trains with ``cd_negatives`` and ``cd_surrogate`` and reports ``kl_rbm`` with
``rbm_log_prob``, while its hidden tests recompute the KL of the trained ``W`` with their own code.
Tests of the other parts use the tests' own machines and oracles, so they cost only their own points.

Part 7's thresholds (exact KL <= 0.1 nats for 1 point and <= 0.025 nats for 2, in the notebook's last two
hidden tests) were calibrated with the instructor's solution and the notebook's budget (n_train = 10,000
exact samples of the 3x3 Ising model at T_c, 16 hidden spins, a = b = 0, CD-1, 300 SGD steps of batch
500 with momentum 0.9 and a learning rate 0.1 that decays linearly to 0): with the notebook's data
(seed 3), 60 seeds of the initial weights, the minibatches and the chains gave an exact KL of
0.0036-0.0115 nats (mean 0.0053, standard deviation 0.0014); 40 independent seeds of the data as well
gave 0.0028-0.0072 (mean 0.0051, standard deviation 0.0011); about 0.9 s of CPU per run. The threshold
0.025 is about twice the largest value seen (14 standard deviations above the mean); the correct
alternative below (other seeds, a scheduler and torch.bernoulli's random stream) passes it. Loops
built on a flawed piece end far above (3 seeds each, KL as the notebook reports it): p(v | h) without
the factor 2, 0.89-0.92; p(h | v) without it, 0.65-0.69; the mean of h instead of a sample in the
Gibbs step, 0.31-0.34; sums instead of means in the surrogate, 830-2200 (diverged). The softplus free
energy trains a machine whose exact KL, read as the +-1 machine the tests evaluate, is 0.073 (notebook
seeds): it fails the 0.025 threshold but not the loose 0.1 one, which only asks that the model has
learned the distribution roughly (independent spins give 3.6).

Two more classic mistakes were graded once and left out of the list to keep this test short (each
grading run executes the whole notebook): log 2cosh x as log(2 cosh x), which overflows for |x| > 710,
got 21 (the hidden tests of Parts 2 and 6 with huge weights, 2 + 2); a log Z that always sums over
the visible layer got 24 (D = 40 is out of reach: Part 6's last test, 1). So did p(h | v) without the
factor 2 (15) and F(negatives) - F(data) (18), which fail the same cells as their listed twins.

CORRECT_ANSWERS holds one notebook that must get full marks with other stable formulas, another way to
draw spins and to cut the gradient of the chain, log Z of the exchanged machine, and the experiment
with other seeds and a scheduler.
"""

ASSIGNMENT = "A5_rbm"
NOTEBOOK = "A5_rbm.ipynb"
MAX_SCORE = 25.0

_FREE_ENERGY = (
    "def free_energy(v, W, a, b):\n"
    "    x = v @ W.T + b\n"
    "    return {body}\n")

_CONDITIONALS = (
    "def hidden_probs(v, W, b):\n"
    "    return {hidden}\n"
    "\n"
    "\n"
    "def visible_probs(h, W, a):\n"
    "    return {visible}\n")

_SAMPLING = (
    "def sample_hidden(v, W, b, generator=None):\n"
    "    p = hidden_probs(v, W, b)\n"
    "    u = torch.rand(p.shape, generator=generator, dtype=p.dtype)\n"
    "    return 2.0 * (u < p).to(p.dtype) - 1.0\n"
    "\n"
    "\n"
    "def sample_visible(h, W, a, generator=None):\n"
    "{sample_visible}"
    "\n"
    "\n"
    "def gibbs_step(v, W, a, b, generator=None):\n"
    "{gibbs_step}")

_CD = (
    "def cd_negatives(v_data, W, a, b, k, generator=None):\n"
    "    with torch.no_grad():\n"
    "        v = v_data\n"
    "        for _ in range(k):\n"
    "            v = gibbs_step(v, W, a, b, generator)\n"
    "    return v\n"
    "\n"
    "\n"
    "def cd_surrogate(v_data, v_negative, W, a, b):\n"
    "    return {surrogate}\n")

_LOG_Z = (
    "def log_partition(W, a, b):\n"
    "    n_h, D = W.shape\n"
    "{log_partition}"
    "\n"
    "\n"
    "def rbm_log_prob(v, W, a, b):\n"
    "    return {log_prob}\n")

_LOG_Z_OVER_SMALLER_LAYER = (
    "    if D <= n_h:\n"
    "        return torch.logsumexp(-free_energy(all_spins(D).to(W.dtype), W, a, b), dim=0)\n"
    "    h = all_spins(n_h).to(W.dtype)\n"
    "    x = h @ W + a\n"
    "    return torch.logsumexp(h @ b + torch.logaddexp(x, -x).sum(dim=-1), dim=0)\n")

_VISIBLE_SAMPLE = (
    "    p = visible_probs(h, W, a)\n"
    "    u = torch.rand(p.shape, generator=generator, dtype=p.dtype)\n"
    "    return 2.0 * (u < p).to(p.dtype) - 1.0\n")

WRONG_ANSWERS = {
    # + instead of - in front of the hidden units' term: Part 2 (1 + 2); through cd_surrogate Part 5's
    # visible test and both gradient tests (1 + 2 + 1); through log_partition over the visible layer Part 6
    # (1 + 2 + 1); the model trained on this surrogate is not the Ising model (1 + 2), and kl_rbm, computed
    # with the wrong rbm_log_prob, is not its KL (visible 1)
    "free_energy_wrong_sign": (
        {"free_energy": _FREE_ENERGY.format(body="-(v @ a) + torch.logaddexp(x, -x).sum(dim=-1)")},
        10.0,
    ),
    # the {0,1}-hidden-unit free energy, softplus instead of log 2cosh: the same cells as the wrong sign,
    # except the loose threshold of Part 7 (the machine trained on it has an exact KL of 0.073 as a +-1 machine)
    "free_energy_softplus_for_spins": (
        {"free_energy": _FREE_ENERGY.format(body="-(v @ a) - F.softplus(x).sum(dim=-1)")},
        11.0,
    ),
    # sigma(a + W^T h), the {0,1} formula without the factor 2, for p(v = +1 | h): Part 3 (1 + 2); the samplers
    # that use it, Part 4's hidden tests (1 + 2) and Part 5's test of the chains (1); the trained model (1 + 2).
    # (The same mistake in hidden_probs, sigma(b + W v), fails the same cells: 15 points as well, measured once.)
    "visible_probs_without_factor_two": (
        {"conditionals": _CONDITIONALS.format(hidden="torch.sigmoid(2.0 * (v @ W.T + b))",
                                              visible="torch.sigmoid(h @ W + a)")},
        15.0,
    ),
    # v sampled as {0, 1} values (torch.bernoulli as it is) instead of spins: Part 4 (1 + 1 + 2), Part 5's
    # visible test and its test of the chains (1 + 1), the trained model (1 + 2)
    "sample_visible_zero_one": (
        {"sampling": _SAMPLING.format(
            sample_visible="    return torch.bernoulli(visible_probs(h, W, a), generator=generator)\n",
            gibbs_step="    return sample_visible(sample_hidden(v, W, b, generator), W, a, generator)\n")},
        16.0,
    ),
    # the mean E[h | v] = 2 p - 1 passed on to the visible update instead of a sample of h: the kernel test
    # of Part 4 (2), the chains of Part 5 (1), the trained model (1 + 2)
    "gibbs_step_mean_field_hidden": (
        {"sampling": _SAMPLING.format(
            sample_visible=_VISIBLE_SAMPLE,
            gibbs_step="    return sample_visible(2.0 * hidden_probs(v, W, b) - 1.0, W, a, generator)\n")},
        19.0,
    ),
    # sums over the batches instead of means: Part 5's value and gradient tests (1 + 2 + 1), and the
    # steps are 500 times too large, so the training diverges (1 + 2). (F(negatives) - F(data), the wrong
    # sign, fails the same cells: 18 points as well, measured once.)
    "cd_surrogate_sum_not_mean": (
        {"contrastive_divergence": _CD.format(
            surrogate="free_energy(v_data, W, a, b).sum() - free_energy(v_negative.detach(), W, a, b).sum()")},
        18.0,
    ),
    # the negatives are not detached: only the test with negatives that carry a graph fails (1); the
    # chains of cd_negatives carry none, so the experiment is not affected
    "cd_surrogate_not_detached": (
        {"contrastive_divergence": _CD.format(
            surrogate="free_energy(v_data, W, a, b).mean() - free_energy(v_negative, W, a, b).mean()")},
        24.0,
    ),
    # log p(v) = -F(v), without log Z: Part 6's tests of rbm_log_prob (1 + 2), and kl_rbm is not a KL (1)
    "rbm_log_prob_without_log_z": (
        {"exact_log_z": _LOG_Z.format(log_partition=_LOG_Z_OVER_SMALLER_LAYER, log_prob="-free_energy(v, W, a, b)")},
        21.0,
    ),
}


CORRECT_ANSWERS = {
    # another stable form of log 2cosh x, |x| + log(1 + e^{-2|x|}); spins from torch.bernoulli, and the chain
    # detached at the end instead of run under no_grad; log Z over the hidden layer written as log Z over the
    # visible layer of the machine with the layers exchanged (W^T, with a and b swapped). The experiment then
    # trains with torch.bernoulli's random stream, other seeds, and a scheduler for the decay.
    "other_formulas_and_seeds": {
        "free_energy": _FREE_ENERGY.format(
            body="-(v @ a) - (x.abs() + torch.log1p(torch.exp(-2.0 * x.abs()))).sum(dim=-1)"),
        "sampling": (
            "def sample_hidden(v, W, b, generator=None):\n"
            "    return 2.0 * torch.bernoulli(hidden_probs(v, W, b), generator=generator) - 1.0\n"
            "\n"
            "\n"
            "def sample_visible(h, W, a, generator=None):\n"
            "    return 2.0 * torch.bernoulli(visible_probs(h, W, a), generator=generator) - 1.0\n"
            "\n"
            "\n"
            "def gibbs_step(v, W, a, b, generator=None):\n"
            "    h = sample_hidden(v, W, b, generator=generator)\n"
            "    return sample_visible(h, W, a, generator=generator)\n"),
        "contrastive_divergence": (
            "def cd_negatives(v_data, W, a, b, k, generator=None):\n"
            "    v = v_data.clone()\n"
            "    for step in range(k):\n"
            "        v = gibbs_step(v, W, a, b, generator=generator)\n"
            "    return v.detach()\n"
            "\n"
            "\n"
            "def cd_surrogate(v_data, v_negative, W, a, b):\n"
            "    v_negative = v_negative.detach()\n"
            "    return torch.mean(free_energy(v_data, W, a, b)) - torch.mean(free_energy(v_negative, W, a, b))\n"),
        "exact_log_z": _LOG_Z.format(
            log_partition=(
                "    if D > n_h:\n"
                "        return log_partition(W.T, b, a)\n"
                "    v = all_spins(D).to(W.dtype)\n"
                "    return torch.logsumexp(-free_energy(v, W, a, b), dim=0)\n"),
            log_prob="-free_energy(v, W, a, b) - log_partition(W, a, b)"),
        # other seeds, and the decay written with a LambdaLR scheduler
        "experiment": (
            "torch.manual_seed(2024)\n"
            "generator = torch.Generator().manual_seed(7)\n"
            "W = 0.1 * torch.randn(n_hidden, D)\n"
            "W.requires_grad_(True)\n"
            "a, b = torch.zeros(D), torch.zeros(n_hidden)\n"
            "optimizer = torch.optim.SGD([W], lr=learning_rate, momentum=momentum)\n"
            "scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1.0 - t / n_steps)\n"
            "for t in range(n_steps):\n"
            "    rows = torch.randint(n_train, (batch_size,), generator=generator)\n"
            "    v_data = train_spins[rows]\n"
            "    v_negative = cd_negatives(v_data, W, a, b, k, generator=generator)\n"
            "    optimizer.zero_grad()\n"
            "    cd_surrogate(v_data, v_negative, W, a, b).backward()\n"
            "    optimizer.step()\n"
            "    scheduler.step()\n"
            "log_q = rbm_log_prob(all_spins(D), W, a, b).detach()\n"
            "kl_rbm = (p_data * (p_data.log() - log_q)).sum().item()\n"
            "print(f\"exact KL(P_data || P_RBM) = {kl_rbm:.4f} nats\")\n"),
    },
}
