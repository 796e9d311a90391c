"""Classic wrong answers for A7 and the exact score each must get.

Each wrong answer loses the points of every test cell it fails, including later parts that call it:
``train_step`` calls ``value_function`` and ``generator_loss``; the identity check of Part 3 (``v_star``)
calls ``value_function`` and ``optimal_discriminator_logit``; the experiment (Part 7) trains with
``train_step``. ``gradient_penalty`` is used by nothing else. The tests of ``train_step`` replay it with
their own references (binary cross-entropies with logits), so a wrong loss fails there as well; the
experiment's coverage test (3 points) draws fresh samples from the trained generator and scores them
itself, so it fails when the *training* went wrong; its report test (1 point) recomputes ``samples``,
``counts``, ``modes_covered`` and ``high_quality_fraction`` from the trained generator, so it passes
whenever the bookkeeping is right, even if the training was not.

Part 7's threshold (all 8 modes covered by 4,000 fresh samples of the trained generator, a mode counting when it
receives at least 1/32 of them, a quarter of its fair share, within 3 standard deviations of its centre; in the
notebook's hidden test) was calibrated with the instructor's solution and the notebook's budget (Generator(4, 64)
and Discriminator(2, 64): two hidden layers of 64 leaky ReLUs each; 600 alternating steps on batches of 256 fresh
points of EightGaussians(radius=2, std=0.2); Adam with lr 3e-3, betas (0.5, 0.999) and a cosine decay for both
players). Over 30 seeds (0..29) of the experiment's generator, run one after the other with OMP_NUM_THREADS=1 and
scored exactly as in the test, all 8 modes were covered every time: the least-covered mode received 0.0645 to
0.0907 of the samples (mean 0.0814, standard deviation 0.0063; at the worst 258 samples where 125 are needed),
and the high-quality fraction was 0.74 to 0.82. With the correct alternative loop below (the codes drawn before
the data), 10 seeds (0..9) covered all 8 modes as well, the least-covered mode with 0.0737 to 0.0887 (at least
295 samples). The required 1/32 = 0.03125 is 8 standard deviations below the mean and half of the worst seed.
With the notebook's seed (2024) the solution prints 8 of 8 modes and a high-quality fraction of 0.836 of its
2,000 samples. (A smaller budget tried first, 32 plain ReLUs, 2 latent dimensions, batches of 128 and no
decay, missed modes in 7 of 30 seeds: that is why the budget is what it is.)

Two more classic mistakes are caught by the same tests and were scored exactly as stated by a full run of this
grading test (kept out of WRONG_ANSWERS so that the test stays short: every wrong answer re-executes the notebook,
about 12 s of one core, 5 of them the training): a sum over the batch in ``generator_loss``,
``-F.logsigmoid(fake_logits).sum()``, 19 (Part 4 and train_step, as the minimax loss; Adam is nearly invariant to
the scale of the loss, so the GAN still covers all 8 modes); the norm over the batch axis in
``gradient_penalty``, ``grad.norm(dim=0)``, 22 (the same cells as the squared norm).
Five more, in functions that the experiment does not call, were checked by executing every cell of the notebook
except the experiment's: D* from the densities, ``log(d) - log(1 - d)`` with ``d = p / (p + q)``, 24 (nan in the
far tails, Part 2's hidden test); JS from the densities, ``p * log(p / m)``, 24 (nan where both underflow, Part
3's hidden test); JS as a sum times the first spacing of the grid, 24 (the uneven grid of Part 3's hidden test);
the gradient penalty without ``create_graph=True``, 23, and with one epsilon per coordinate, ``torch.rand(real.shape)``,
23 (Part 6's hidden test).
"""

ASSIGNMENT = "A7_gan"
NOTEBOOK = "A7_gan.ipynb"
MAX_SCORE = 26.0

WRONG_ANSWERS = {
    # log(sigmoid(l)) and log(1 - sigmoid(l)): right for moderate logits, -inf for logits of +-1000 (and for
    # 1000 where the discriminator is wrong); only Part 1's hidden test (2). The logits of D* in Part 3 and of
    # the discriminator in training stay moderate, so the rest passes.
    "value_log_of_sigmoid": (
        {"value_function": (
            "def value_function(real_logits, fake_logits):\n"
            "    return torch.log(torch.sigmoid(real_logits)).mean() + torch.log(1 - torch.sigmoid(fake_logits)).mean()\n")},
        24.0,
    ),
    # the labels swapped: the data scored as fakes and the fakes as data, E log(1 - D(x)) + E log D(G(z)).
    # Part 1 (1 + 2), the identity (1), train_step (1 + 3: the discriminator learns the opposite), and the GAN
    # trained with it does not cover all 8 modes (3); its report is still right (the report test passes)
    "value_labels_swapped": (
        {"value_function": (
            "def value_function(real_logits, fake_logits):\n"
            "    return F.logsigmoid(-real_logits).mean() + F.logsigmoid(fake_logits).mean()\n")},
        15.0,
    ),
    # the minimax loss E log(1 - D(G(z))) where the non-saturating one was asked: Part 4 (1 + 2), train_step
    # (1 + 3); the GAN trained with it still covers all 8 modes at the notebook's seed
    "generator_loss_minimax": (
        {"generator_loss": (
            "def generator_loss(fake_logits):\n"
            "    return F.logsigmoid(-fake_logits).mean()\n")},
        19.0,
    ),
    # the fakes not detached in the discriminator step (the generator's gradients are zeroed before its own
    # backward, so the parameters after the step are right): only the hidden test that looks at the generator
    # while the discriminator steps (3)
    "train_step_without_detach": (
        {"train_step": (
            "def train_step(G, D, x_real, z, d_optimizer, g_optimizer):\n"
            "    fake = G(z)\n"
            "    d_loss = -value_function(D(x_real), D(fake))\n"
            "    d_optimizer.zero_grad()\n"
            "    d_loss.backward()\n"
            "    d_optimizer.step()\n"
            "    g_loss = generator_loss(D(G(z)))\n"
            "    g_optimizer.zero_grad()\n"
            "    g_loss.backward()\n"
            "    g_optimizer.step()\n"
            "    return d_loss.item(), g_loss.item()\n")},
        23.0,
    ),
    # |grad|^2 where (|grad| - 1)^2 belongs: Part 6 (1 + 3)
    "gradient_penalty_squared_norm": (
        {"gradient_penalty": (
            "def gradient_penalty(critic, real, fake, generator=None):\n"
            "    eps = torch.rand((real.shape[0], 1), generator=generator, dtype=real.dtype)\n"
            "    x_hat = (eps * real + (1.0 - eps) * fake).detach().requires_grad_(True)\n"
            "    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)\n"
            "    return (grad ** 2).sum(dim=1).mean()\n")},
        22.0,
    ),
    # one epsilon for the whole batch: a linear critic cannot tell (the visible test passes), the hidden test
    # finds the interpolates of all pairs at the same fraction of their segments (3)
    "gradient_penalty_one_epsilon": (
        {"gradient_penalty": (
            "def gradient_penalty(critic, real, fake, generator=None):\n"
            "    eps = torch.rand((1, 1), generator=generator, dtype=real.dtype)\n"
            "    x_hat = (eps * real + (1.0 - eps) * fake).detach().requires_grad_(True)\n"
            "    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)\n"
            "    return ((grad.norm(dim=1) - 1.0) ** 2).mean()\n")},
        23.0,
    ),
}


CORRECT_ANSWERS = {
    # other formulas for the same quantities: binary cross-entropies with logits, D* through logaddexp, the JS
    # terms masked where a density is 0, softplus, fakes made under torch.no_grad(), torch.lerp and
    # torch.linalg.vector_norm with grad_outputs; and a training loop that draws the codes before the data and
    # finds the nearest centre by argmin of squared distances (another correct loop, which meets the threshold too)
    "other_formulas_and_loop": {
        "value_function": (
            "def value_function(real_logits, fake_logits):\n"
            "    real_term = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))\n"
            "    fake_term = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))\n"
            "    return -(real_term + fake_term)\n"),
        "optimal_discriminator_logit": (
            "def optimal_discriminator_logit(x, p_data, p_g):\n"
            "    log_p, log_q = p_data.log_prob(x), p_g.log_prob(x)\n"
            "    log_total = torch.logaddexp(log_p, log_q)\n"
            "    return (log_p - log_total) - (log_q - log_total)\n"),
        "js_divergence": (
            "def js_divergence(log_p, log_q, grid):\n"
            "    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)\n"
            "    p, q = torch.exp(log_p), torch.exp(log_q)\n"
            "    kl_p = torch.where(p > 0, p * (log_p - log_m), torch.zeros_like(p))\n"
            "    kl_q = torch.where(q > 0, q * (log_q - log_m), torch.zeros_like(q))\n"
            "    return 0.5 * torch.trapezoid(kl_p, grid) + 0.5 * torch.trapezoid(kl_q, grid)\n"),
        "generator_loss": (
            "def generator_loss(fake_logits):\n"
            "    return F.softplus(-fake_logits).mean()\n"),
        "train_step": (
            "def train_step(G, D, x_real, z, d_optimizer, g_optimizer):\n"
            "    with torch.no_grad():\n"
            "        fake = G(z)\n"
            "    d_optimizer.zero_grad()\n"
            "    d_loss = -value_function(D(x_real), D(fake))\n"
            "    d_loss.backward()\n"
            "    d_optimizer.step()\n"
            "    g_optimizer.zero_grad()\n"
            "    g_loss = generator_loss(D(G(z)))\n"
            "    g_loss.backward()\n"
            "    g_optimizer.step()\n"
            "    return float(d_loss.detach()), float(g_loss.detach())\n"),
        "gradient_penalty": (
            "def gradient_penalty(critic, real, fake, generator=None):\n"
            "    n = real.shape[0]\n"
            "    eps = torch.rand((n, 1), generator=generator, dtype=real.dtype)\n"
            "    x_hat = torch.lerp(fake.detach(), real.detach(), eps).requires_grad_(True)\n"
            "    scores = critic(x_hat)\n"
            "    grad = torch.autograd.grad(scores, x_hat, grad_outputs=torch.ones_like(scores), create_graph=True)[0]\n"
            "    return torch.mean((torch.linalg.vector_norm(grad, dim=-1) - 1.0) ** 2)\n"),
        "experiment": (
            "generator = torch.Generator().manual_seed(2024)\n"
            "G = Generator(latent_dim, hidden, generator=generator)\n"
            "D = Discriminator(2, hidden, generator=generator)\n"
            "d_optimizer = torch.optim.Adam(D.parameters(), lr=learning_rate, betas=betas)\n"
            "g_optimizer = torch.optim.Adam(G.parameters(), lr=learning_rate, betas=betas)\n"
            "schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=n_steps) for o in (d_optimizer, g_optimizer)]\n"
            "d_losses, g_losses = [], []\n"
            "for step in range(n_steps):\n"
            "    z = torch.randn(batch_size, latent_dim, generator=generator)\n"
            "    x_real = toy.sample(batch_size, generator=generator).to(torch.float64)\n"
            "    losses = train_step(G, D, x_real, z, d_optimizer, g_optimizer)\n"
            "    for scheduler in schedulers:\n"
            "        scheduler.step()\n"
            "    d_losses.append(losses[0])\n"
            "    g_losses.append(losses[1])\n"
            "with torch.no_grad():\n"
            "    samples = G(torch.randn(n_eval, latent_dim, generator=torch.Generator().manual_seed(eval_seed)))\n"
            "squared = ((samples[:, None, :] - toy.centers()[None, :, :]) ** 2).sum(dim=-1)\n"
            "nearest = squared.argmin(dim=1)\n"
            "good = squared.min(dim=1).values.sqrt() <= 3 * toy.std\n"
            "counts = torch.stack([(good & (nearest == k)).sum() for k in range(8)])\n"
            "modes_covered = sum(int(c) >= n_eval / 32 for c in counts)\n"
            "high_quality_fraction = good.double().mean().item()\n"
            "print(f'modes covered: {modes_covered} of 8; high-quality samples: {high_quality_fraction:.3f}')\n"),
    },
}
