"""Classic wrong answers for A2 and the exact score each must get.

Each wrong answer loses the points of every test cell it fails, including later parts that call
it: ``exact_log_partition`` uses ``ising_energy``; the sweep uses ``delta_energy_flip`` and
``metropolis_acceptance``; the experiment uses the sweep, ``integrated_autocorrelation_time`` and
``error_bar``. The experiment's value test (2 points) needs a sampler of the right distribution;
its error-bar test (1 point) compares the reported error bar with what Part 7's recipe gives on the
student's own series, so a wrong sampler with an honest error bar keeps that point.

Each of CORRECT_ANSWERS must get full marks. The one here is the slow end of what a correct
solution may be: a sweep with Python loops over the chains and the sites, one spin at a time with
Python floats. The budgets of the sweep tests and of the experiment are sized so that it finishes
every cell well inside nbgrader's 30 s limit (the slowest cell took 1.3 s when measured).
"""

ASSIGNMENT = "A2_ising_mcmc"
NOTEBOOK = "A2_ising_mcmc.ipynb"
MAX_SCORE = 25.0

WRONG_ANSWERS = {
    # no wrap-around: Part 1 (4) and exact_log_partition, which calls it (L = 2 closed form: 1 + 2)
    "energy_open_boundaries": (
        {"ising_energy": (
            "def ising_energy(s, J=1.0, h=0.0):\n"
            "    horizontal = (s[..., :, :-1] * s[..., :, 1:]).sum(dim=(-2, -1))\n"
            "    vertical = (s[..., :-1, :] * s[..., 1:, :]).sum(dim=(-2, -1))\n"
            "    return -J * (horizontal + vertical) - h * s.sum(dim=(-2, -1))\n")},
        18.0,
    ),
    # every bond counted twice (all four neighbours, no 1/2): the same 7 points
    "energy_double_counting": (
        {"ising_energy": (
            "def ising_energy(s, J=1.0, h=0.0):\n"
            "    neighbours = (torch.roll(s, 1, -1) + torch.roll(s, -1, -1)\n"
            "                  + torch.roll(s, 1, -2) + torch.roll(s, -1, -2))\n"
            "    return -J * (s * neighbours).sum(dim=(-2, -1)) - h * s.sum(dim=(-2, -1))\n")},
        18.0,
    ),
    # the field term forgotten: the visible tests use h = 0; hidden energy (3) and hidden log Z (2)
    "energy_ignores_field": (
        {"ising_energy": (
            "def ising_energy(s, J=1.0, h=0.0):\n"
            "    bonds = s * (torch.roll(s, -1, -1) + torch.roll(s, -1, -2))\n"
            "    return -J * bonds.sum(dim=(-2, -1))\n")},
        20.0,
    ),
    # log(sum(exp(.))) overflows to inf at beta = 50 (hidden log Z test, 2)
    "log_partition_naive_exp_sum": (
        {"exact_log_partition": (
            "def all_spin_states(L):\n"
            "    bits = (torch.arange(2 ** (L * L))[:, None] >> torch.arange(L * L)) & 1\n"
            "    return (2 * bits - 1).to(torch.float64).reshape(-1, L, L)\n"
            "\n"
            "def exact_log_partition(L, beta, J=1.0, h=0.0):\n"
            "    energies = ising_energy(all_spin_states(L), J=J, h=h)\n"
            "    return float(torch.log(torch.exp(-beta * energies).sum()))\n")},
        23.0,
    ),
    # Delta E without the factor 2: a sampler at beta / 2. Part 4 (3), sweep (1 + 3), experiment value (2)
    "delta_energy_missing_factor_2": (
        {"delta_energy_flip": (
            "def delta_energy_flip(s, J=1.0, h=0.0):\n"
            "    neighbours = (torch.roll(s, 1, -1) + torch.roll(s, -1, -1)\n"
            "                  + torch.roll(s, 1, -2) + torch.roll(s, -1, -2))\n"
            "    return s * (J * neighbours + h)\n")},
        16.0,
    ),
    # exp(+beta dE): samples exp(+beta E) instead. Part 5 (2), sweep (4), experiment value (2)
    "acceptance_wrong_sign": (
        {"metropolis_acceptance": (
            "def metropolis_acceptance(delta_E, beta):\n"
            "    return torch.clamp(torch.exp(beta * delta_E), max=1.0)\n")},
        17.0,
    ),
    # beta and T confused (exp(-dE / beta)): at T = 2.5 that is beta = 2.5, the chains freeze, their
    # |m| never decorrelates and the window condition of the autocorrelation time cannot be met, so
    # the experiment cell stops with an error: sweep (4) and all of the experiment (4)
    "sweep_uses_temperature_as_beta": (
        {"metropolis_sweep": (
            "def metropolis_sweep(s, beta, J=1.0, h=0.0, generator=None):\n"
            "    chains, L, _ = s.shape\n"
            "    s = s.clone()\n"
            "    chain = torch.arange(chains)\n"
            "    for _ in range(L * L):\n"
            "        rows = torch.randint(L, (chains,), generator=generator)\n"
            "        cols = torch.randint(L, (chains,), generator=generator)\n"
            "        delta_E = delta_energy_flip(s, J, h)[chain, rows, cols]\n"
            "        accept = torch.rand(chains, generator=generator) < metropolis_acceptance(delta_E, 1.0 / beta)\n"
            "        spin = s[chain, rows, cols]\n"
            "        s[chain, rows, cols] = torch.where(accept, -spin, spin)\n"
            "    return s\n")},
        17.0,
    ),
    # no clone: the caller's configuration changes under its feet (visible sweep test, 1)
    "sweep_modifies_its_input": (
        {"metropolis_sweep": (
            "def metropolis_sweep(s, beta, J=1.0, h=0.0, generator=None):\n"
            "    chains, L, _ = s.shape\n"
            "    chain = torch.arange(chains)\n"
            "    for _ in range(L * L):\n"
            "        rows = torch.randint(L, (chains,), generator=generator)\n"
            "        cols = torch.randint(L, (chains,), generator=generator)\n"
            "        delta_E = delta_energy_flip(s, J, h)[chain, rows, cols]\n"
            "        accept = torch.rand(chains, generator=generator) < metropolis_acceptance(delta_E, beta)\n"
            "        spin = s[chain, rows, cols]\n"
            "        s[chain, rows, cols] = torch.where(accept, -spin, spin)\n"
            "    return s\n")},
        24.0,
    ),
    # tau = 1 + sum rho (the factor 2 of the two-sided sum forgotten): Part 7 tau (1 + 2), and the
    # experiment's error bar comes out too small by sqrt((1 + tau) / (2 tau)) ~ 0.77 (1)
    "tau_missing_factor_2": (
        {"integrated_autocorrelation_time": (
            "def integrated_autocorrelation_time(x, c=5.0):\n"
            "    if x.dim() == 1:\n"
            "        x = x[:, None]\n"
            "    n = x.shape[0]\n"
            "    dx = x - x.mean()\n"
            "    spectrum = torch.fft.rfft(dx, n=2 * n, dim=0)\n"
            "    autocov = torch.fft.irfft(spectrum.abs() ** 2, n=2 * n, dim=0)[:n].mean(dim=1)\n"
            "    rho = autocov / autocov[0]\n"
            "    tau_of_window = 1.0 + torch.cumsum(rho[1:], dim=0)\n"
            "    inside = torch.arange(1, n) >= c * tau_of_window\n"
            "    return float(tau_of_window[int(inside.nonzero()[0])])\n")},
        21.0,
    ),
    # std / sqrt(N), as if the samples were independent: error_bar (1) and the experiment's error bar (1)
    "error_bar_forgets_tau": (
        {"error_bar": (
            "def error_bar(x, tau):\n"
            "    return float(x.std() / math.sqrt(x.numel()))\n")},
        23.0,
    ),
}


CORRECT_ANSWERS = {
    # Python loops over the chains and the L^2 updates, one spin at a time with Python floats; the
    # random numbers of a sweep come from three calls that draw them all at once
    "sweep_python_loops_over_chains_and_sites": {
        "metropolis_sweep": (
            "def metropolis_sweep(s, beta, J=1.0, h=0.0, generator=None):\n"
            "    chains, L, _ = s.shape\n"
            "    rows = torch.randint(L, (L * L, chains), generator=generator).tolist()\n"
            "    cols = torch.randint(L, (L * L, chains), generator=generator).tolist()\n"
            "    u = torch.rand(L * L, chains, generator=generator).tolist()\n"
            "    spins = s.tolist()                      # nested lists of Python floats: s stays untouched\n"
            "    for c in range(chains):\n"
            "        x = spins[c]\n"
            "        for step in range(L * L):\n"
            "            i, j = rows[step][c], cols[step][c]\n"
            "            neighbours = x[(i + 1) % L][j] + x[i - 1][j] + x[i][(j + 1) % L] + x[i][j - 1]\n"
            "            delta_E = 2.0 * x[i][j] * (J * neighbours + h)\n"
            "            if u[step][c] < math.exp(min(0.0, -beta * delta_E)):\n"
            "                x[i][j] = -x[i][j]\n"
            "    return torch.tensor(spins, dtype=s.dtype)\n")},
}
