"""Classic wrong answers for A8 and the exact score each must get.

Each wrong answer loses the points of every test cell it fails, including later parts that call it:
``ddpm_loss`` calls ``q_sample``; ``sample`` calls ``reverse_step``; the experiment (Part 6) trains the
``NoisePredictor`` with the student's ``linear_schedule`` and ``ddpm_loss`` and draws ``samples`` with the
student's ``sample``. The tests of Parts 2-5 use the tests' own schedule (``_ref_schedule``), so a wrong
schedule costs nothing there. The experiment's threshold test (3 points) draws new samples from the trained
network with the tests' own sampler and compares them with new data, so it fails when the *training* went
wrong; its report test (2 points) recomputes ``samples`` with the tests' own sampler and the student's seed, so
it fails when the student's sampler is wrong even if training worked.

Part 6's threshold (MMD^2 below 70 of its standard errors, in the notebook's hidden test) was calibrated with the
instructor's solution and the notebook's budget (a NoisePredictor with three hidden layers of 64 SiLU units and
sinusoidal features of t / T; T = 50 steps, beta from 2e-3 to 0.4; 600 Adam steps of 128 of the 4,000 training
points drawn with replacement, lr 1e-2 with cosine decay; data EightGaussians(radius=2.0, std=0.25)): the test
draws 2,000 samples from the trained network with its own sampler (seed 4242) and compares them with 2,000 fresh
data points (seed 4243) by the unbiased MMD^2 with the RBF kernel of bandwidth 0.5 and its null standard error
sqrt(2 E[H^2] / (n (n - 1))). Over 30 seeds (0..29) of the initial weights, the minibatches, the steps and the noise,
measured exactly as in the test (one run each, sequentially, OMP_NUM_THREADS=1): MMD^2 from 0.0086 to 0.0135 (mean
0.0102, standard deviation 0.0012) with standard errors 0.00028 to 0.00029, that is 29.8 to 48.1 standard errors
(mean 35.4, standard deviation 4.5). The samples are close to the data but still distinguishable at n = 2,000 (the
small network blurs the modes; at bandwidth 1.0 the same runs give 2.7 to 17.3 standard errors, at 0.3 64.6 to
87.4). The limit, 70 standard errors, is 7.6 standard deviations above the mean and 1.46 times the worst seed. The
networks that flawed losses train, at the notebook's seed (2024): the network trained to predict x0 507 standard
errors; sqrt(alpha_t) for sqrt(abar_t) in q_sample 85.4 (both fail); abar_{t-1} for abar_t in q_sample 33.6, steps
drawn from 0..T-1 33.6, a mean over the coordinates 31.4 (these three train a usable network and pass the threshold:
they are caught by the tests of Parts 2 and 4). With the notebook's seed the solution's network is at 31.4 standard
errors in the hidden test, and the solution prints MMD^2 = 0.01001 (34.7 standard errors) for its own samples against
x_fresh.

Three more classic mistakes in Part 3 and one in Part 1 were checked by executing their test cells alone (kept out of
WRONG_ANSWERS so that the grading test stays short: every wrong answer trains a network): abar_t where abar_{t-1}
belongs in the posterior variance, the same in the posterior mean, and the standard deviation returned for the
posterior variance each fail both tests of Part 3 (4 points; nothing else calls posterior_mean_variance, so each
scores 21); alpha_bars[t] = alpha_1 ... alpha_{t-1} (the product without step t) fails both tests of Part 1 (3
points, and the experiment, which uses the student's schedule: its total was not measured).

Each of CORRECT_ANSWERS must get full marks: the tests compare values (with the random draws replayed from
the stated calls), moments and statistics, not one way of writing them, and the threshold holds for any
correct training loop with the notebook's budget.
"""

ASSIGNMENT = "A8_ddpm"
NOTEBOOK = "A8_ddpm.ipynb"
MAX_SCORE = 25.0

WRONG_ANSWERS = {
    # abar_{t-1} where abar_t belongs (off by one in t): Part 2 (1 + 2), and through q_sample the loss (1 + 3);
    # the network still learns a usable noise predictor (33.6 standard errors: the threshold passes)
    "q_sample_alpha_bar_of_previous_step": (
        {"q_sample": (
            "def q_sample(x0, t, schedule, noise):\n"
            "    alpha_bar = schedule.alpha_bars[t - 1][:, None]\n"
            "    return torch.sqrt(alpha_bar) * x0 + torch.sqrt(1.0 - alpha_bar) * noise\n")},
        18.0,
    ),
    # sqrt(alpha_t) = sqrt(1 - beta_t), the factor of one step, where sqrt(abar_t) belongs: Part 2 (1 + 2), the
    # loss (1 + 3), and the network is trained at the wrong noise levels (85.4 standard errors: 3)
    "q_sample_sqrt_alpha_for_sqrt_alpha_bar": (
        {"q_sample": (
            "def q_sample(x0, t, schedule, noise):\n"
            "    alpha, alpha_bar = schedule.alphas[t][:, None], schedule.alpha_bars[t][:, None]\n"
            "    return torch.sqrt(alpha) * x0 + torch.sqrt(1.0 - alpha_bar) * noise\n")},
        15.0,
    ),
    # t drawn from 0..T-1 and used as the step: the replayed draws differ (loss 1 + 3); the network never sees
    # t = T but still samples well enough (33.6 standard errors: the threshold passes)
    "loss_steps_drawn_from_zero": (
        {"ddpm_loss": (
            "def ddpm_loss(eps_model, x0, schedule, generator=None):\n"
            "    t = torch.randint(0, schedule.T, (x0.shape[0],), generator=generator)\n"
            "    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)\n"
            "    x_t = q_sample(x0, t, schedule, noise)\n"
            "    return ((noise - eps_model(x_t, t)) ** 2).sum(dim=1).mean()\n")},
        21.0,
    ),
    # a mean over the coordinates too (torch's mse_loss), half the loss in D = 2: the loss (1 + 3). Adam does not
    # care about a constant factor, so training is as good as the solution's (31.4 standard errors)
    "loss_mean_over_coordinates": (
        {"ddpm_loss": (
            "def ddpm_loss(eps_model, x0, schedule, generator=None):\n"
            "    t = torch.randint(1, schedule.T + 1, (x0.shape[0],), generator=generator)\n"
            "    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)\n"
            "    x_t = q_sample(x0, t, schedule, noise)\n"
            "    return torch.nn.functional.mse_loss(eps_model(x_t, t), noise)\n")},
        21.0,
    ),
    # the network trained to predict x0 where the noise is asked: the loss (1 + 3), and the sampler, which reads
    # its output as noise, produces no eight Gaussians (507 standard errors: 3)
    "loss_predicts_x0": (
        {"ddpm_loss": (
            "def ddpm_loss(eps_model, x0, schedule, generator=None):\n"
            "    t = torch.randint(1, schedule.T + 1, (x0.shape[0],), generator=generator)\n"
            "    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)\n"
            "    x_t = q_sample(x0, t, schedule, noise)\n"
            "    return ((x0 - eps_model(x_t, t)) ** 2).sum(dim=1).mean()\n")},
        18.0,
    ),
    # sigma_t = beta_t, the variance where the standard deviation belongs: the reverse step (1 + 2), the sampler
    # (1 + 1: its exact Gaussian moments) and the report (2); the trained network is fine (the threshold passes)
    "reverse_step_variance_as_std": (
        {"reverse_step": (
            "def reverse_step(eps_model, x_t, t, schedule, generator=None):\n"
            "    beta, alpha, alpha_bar = schedule.betas[t], schedule.alphas[t], schedule.alpha_bars[t]\n"
            "    eps = eps_model(x_t, torch.full((x_t.shape[0],), t, dtype=torch.long))\n"
            "    mean = (x_t - beta / torch.sqrt(1.0 - alpha_bar) * eps) / torch.sqrt(alpha)\n"
            "    if t == 1:\n"
            "        return mean\n"
            "    return mean + beta * torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype)\n")},
        18.0,
    ),
    # noise added at the last step t = 1 as well: the reverse step (1 + 2: the generator's state changes at t = 1),
    # the sampler (1; the extra variance beta_1 is below what its hidden test of moments resolves) and the report (2)
    "reverse_step_noise_at_last_step": (
        {"reverse_step": (
            "def reverse_step(eps_model, x_t, t, schedule, generator=None):\n"
            "    beta, alpha, alpha_bar = schedule.betas[t], schedule.alphas[t], schedule.alpha_bars[t]\n"
            "    eps = eps_model(x_t, torch.full((x_t.shape[0],), t, dtype=torch.long))\n"
            "    mean = (x_t - beta / torch.sqrt(1.0 - alpha_bar) * eps) / torch.sqrt(alpha)\n"
            "    return mean + torch.sqrt(beta) * torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype)\n")},
        19.0,
    ),
    # beta_t / (1 - abar_t) where beta_t / sqrt(1 - abar_t) belongs: the reverse step (1 + 2), the sampler (1 + 1) and
    # the report (2)
    "reverse_step_without_square_root": (
        {"reverse_step": (
            "def reverse_step(eps_model, x_t, t, schedule, generator=None):\n"
            "    beta, alpha, alpha_bar = schedule.betas[t], schedule.alphas[t], schedule.alpha_bars[t]\n"
            "    eps = eps_model(x_t, torch.full((x_t.shape[0],), t, dtype=torch.long))\n"
            "    mean = (x_t - beta / (1.0 - alpha_bar) * eps) / torch.sqrt(alpha)\n"
            "    if t == 1:\n"
            "        return mean\n"
            "    return mean + torch.sqrt(beta) * torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype)\n")},
        18.0,
    ),
}


CORRECT_ANSWERS = {
    # other formulas for the same quantities: the schedule's products as the exponential of a cumulative sum of
    # logarithms; abar_t gathered with index_select; abar_{t-1} = abar_t / alpha_t in the posterior; the steps
    # drawn from 0..T-1 and shifted by one (the same draws); the loss as a summed mse_loss divided by n; the reverse
    # step as the posterior mean of Part 3 at the predicted x0 (algebraically the same mean); a decorated sampler
    # that counts its steps with reversed(range(...))
    "other_formulas": {
        "linear_schedule": (
            "def linear_schedule(T, beta_1, beta_T):\n"
            "    if not (isinstance(T, int) and T >= 1 and 0.0 < beta_1 <= beta_T < 1.0):\n"
            "        raise ValueError('expected an int T >= 1 and 0 < beta_1 <= beta_T < 1')\n"
            "    steps = torch.arange(T + 1, dtype=torch.float64)\n"
            "    betas = beta_1 + (beta_T - beta_1) * (steps - 1) / max(T - 1, 1)\n"
            "    betas[0] = 0.0\n"
            "    alphas = 1.0 - betas\n"
            "    alpha_bars = torch.exp(torch.cumsum(torch.log(alphas), dim=0))\n"
            "    return Schedule(betas=betas, alphas=alphas, alpha_bars=alpha_bars)\n"),
        "q_sample": (
            "def q_sample(x0, t, schedule, noise):\n"
            "    a = torch.index_select(schedule.alpha_bars, 0, t).unsqueeze(-1)\n"
            "    return a.sqrt() * x0 + (1 - a).sqrt() * noise\n"),
        "posterior_mean_variance": (
            "def posterior_mean_variance(x_t, x0, t, schedule):\n"
            "    beta, alpha, alpha_bar = schedule.betas[t], schedule.alphas[t], schedule.alpha_bars[t]\n"
            "    alpha_bar_prev = alpha_bar / alpha\n"
            "    variance = beta * (1 - alpha_bar_prev) / (1 - alpha_bar)\n"
            "    mean = ((alpha_bar_prev.sqrt() * beta)[:, None] * x0\n"
            "            + (alpha.sqrt() * (1 - alpha_bar_prev))[:, None] * x_t) / (1 - alpha_bar)[:, None]\n"
            "    return mean, variance\n"),
        "ddpm_loss": (
            "def ddpm_loss(eps_model, x0, schedule, generator=None):\n"
            "    n = len(x0)\n"
            "    t = torch.randint(0, schedule.T, (n,), generator=generator) + 1\n"
            "    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)\n"
            "    prediction = eps_model(q_sample(x0, t, schedule, noise), t)\n"
            "    return torch.nn.functional.mse_loss(prediction, noise, reduction='sum') / n\n"),
        "reverse_step": (
            "def reverse_step(eps_model, x_t, t, schedule, generator=None):\n"
            "    steps = torch.full((x_t.shape[0],), t, dtype=torch.long)\n"
            "    eps = eps_model(x_t, steps)\n"
            "    alpha_bar = schedule.alpha_bars[t]\n"
            "    x0_hat = (x_t - torch.sqrt(1 - alpha_bar) * eps) / torch.sqrt(alpha_bar)\n"
            "    mean, _ = posterior_mean_variance(x_t, x0_hat, steps, schedule)\n"
            "    if t > 1:\n"
            "        mean = mean + schedule.betas[t] ** 0.5 * torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype)\n"
            "    return mean\n"),
        "sample": (
            "@torch.no_grad()\n"
            "def sample(eps_model, n, D, schedule, generator=None):\n"
            "    x = torch.randn((n, D), generator=generator)\n"
            "    for t in reversed(range(1, schedule.T + 1)):\n"
            "        x = reverse_step(eps_model, x, t, schedule, generator)\n"
            "    return x\n"),
    },
}
