"""Classic wrong answers for A6 and the exact score each must get.

Each wrong answer loses the points of every test cell it fails, including later parts that call it:
``elbo`` calls ``reparameterize``, ``bernoulli_log_likelihood`` and ``gaussian_kl_standard``;
``importance_log_weights`` calls ``reparameterize`` and ``bernoulli_log_likelihood``; the experiment
(Part 7) trains the ``VAE`` class, whose loss is the student's ``elbo``, and reports ``elbo_test`` and
``iwae_test``. ``iwae_bound`` is tested on the tests' own log-weights, so a wrong weight costs nothing
there. The experiment's threshold test (3 points) recomputes the expected test ELBO of the trained
networks with torch.distributions, so it fails when the *training* went wrong; its report test (2 points)
recomputes ``elbo_test`` and ``iwae_test`` with the same noise, so it fails when the student's functions
are wrong even if training worked.

Part 7's threshold (expected ELBO >= -20.0 nats per test image, in the notebook's hidden test) was
calibrated with the instructor's solution and the notebook's budget (VAE(64, 8, 64): one tanh layer of 64
units in the encoder and in the decoder, 8 latent dimensions; 400 Adam steps of 500 training images drawn
with replacement, lr 1e-2 with cosine decay): over 60 seeds (0..59) of the initial weights, the minibatches
and the noise, the expected test ELBO (as in the test, with 64 codes per test image: standard error < 0.016) was -19.50 to
-19.21 nats (mean -19.33, standard deviation 0.066); with minibatches from shuffled epochs (the
correct alternative below), 15 seeds (0..14) gave -19.38 to -19.15 (mean -19.27, standard deviation 0.057)
and the notebook's seed -19.43.
The threshold is 10 standard deviations below the mean and 0.5 nats below the worst seed. The models
that the flawed objectives train are far below it (at the notebook's seed): no gradient through z (the
encoder collapses onto the prior, the decoder learns independent pixels) and a mean over the pixels
-25.17; sigma for sigma^2 in the KL -24.44; exp(logvar) as the standard deviation -21.70; log sigma for
log sigma^2 in the KL -20.95; the KL with the wrong sign diverges. With the notebook's seed the solution
prints a one-sample test ELBO of -19.378 and an IWAE bound (S = 100) of -18.992 nats per image.

Three more classic mistakes are caught by the same tests and scored exactly as stated by a full run of
this grading test (kept out of WRONG_ANSWERS so that the test stays short: every wrong answer trains a VAE):
``(mu + sigma eps).detach()`` 18 (the same cells as torch.normal); log sigma where log sigma^2 belongs in
the KL, 1/2 (mu^2 + sigma^2 - 1 - log sigma), 13 (the same cells as sigma for sigma^2; trained: -20.95);
``torch.log(torch.exp(log_w).mean(0))`` 23 (only Part 6's hidden test: -inf at log-weights of -1000).

Each of CORRECT_ANSWERS must get full marks: the tests compare values (with the noise replayed from the
stated draws) and gradients, not one way of writing them, and the threshold holds for any correct
training loop with the notebook's budget.
"""

ASSIGNMENT = "A6_vae"
NOTEBOOK = "A6_vae.ipynb"
MAX_SCORE = 25.0

WRONG_ANSWERS = {
    # torch.normal(mu, sigma): the same numbers as mu + sigma eps, but torch.normal has no gradient with respect
    # to its mean and standard deviation. Part 1's hidden test (2) and the ELBO's gradients (2); the encoder then
    # learns from the KL term only and collapses onto the prior, so the decoder ignores z and the trained VAE is
    # an independent-pixel model (expected test ELBO -25.17: 3). elbo_test and iwae_test are still the right
    # numbers for the trained networks (the report passes).
    "reparameterize_with_torch_normal": (
        {"reparameterize": (
            "def reparameterize(mu, logvar, generator=None):\n"
            "    return torch.normal(mu, torch.exp(0.5 * logvar), generator=generator)\n")},
        18.0,
    ),
    # sigma = exp(logvar), the variance where the standard deviation belongs: Part 1 (1 + 2), and through it the
    # ELBO (1 + 2), the importance weights (1 + 2), the trained VAE (expected test ELBO -21.70: 3) and the report (2)
    "reparameterize_std_is_exp_logvar": (
        {"reparameterize": (
            "def reparameterize(mu, logvar, generator=None):\n"
            "    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)\n"
            "    return mu + torch.exp(logvar) * eps\n")},
        11.0,
    ),
    # sigma where sigma^2 belongs, 1/2 (mu^2 + sigma - 1 - log sigma^2): Part 2 (1 + 3), the ELBO (1 + 2), the
    # VAE trained with it (-24.44: 3) and the report (2). The importance weights do not use the KL (they pass).
    "kl_sigma_for_variance": (
        {"gaussian_kl_standard": (
            "def gaussian_kl_standard(mu, logvar):\n"
            "    return 0.5 * (mu ** 2 + torch.exp(0.5 * logvar) - 1.0 - logvar).sum(dim=-1)\n")},
        13.0,
    ),
    # Kingma and Welling's -KL = 1/2 sum (1 + log sigma^2 - mu^2 - sigma^2) returned as the KL: Part 2 (4), the
    # ELBO (3); training maximises the KL and diverges, so the test ELBOs are positive and huge (visible 1, 3, 2)
    "kl_wrong_sign": (
        {"gaussian_kl_standard": (
            "def gaussian_kl_standard(mu, logvar):\n"
            "    return 0.5 * (1.0 + logvar - mu ** 2 - torch.exp(logvar)).sum(dim=-1)\n")},
        12.0,
    ),
    # a mean over the pixels instead of the sum: Part 3 (1 + 2), the ELBO (3) and the weights (3), which call it;
    # the data weigh 64 times less than the KL, the posterior collapses (-25.17: 3), and the report (2)
    "bernoulli_mean_over_pixels": (
        {"bernoulli_log_likelihood": (
            "def bernoulli_log_likelihood(logits, x):\n"
            "    return (x * logits - F.softplus(logits)).mean(dim=-1)\n")},
        11.0,
    ),
    # log(sigmoid(l)) and log(1 - sigmoid(l)): right for moderate logits, nan/-inf for logits of +-50 and +-1000;
    # only Part 3's hidden test (2). The decoder's logits stay moderate in training, so the rest passes.
    "bernoulli_log_of_sigmoid": (
        {"bernoulli_log_likelihood": (
            "def bernoulli_log_likelihood(logits, x):\n"
            "    p = torch.sigmoid(logits)\n"
            "    return (x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(dim=-1)\n")},
        23.0,
    ),
    # the mean over the batch inside elbo (a scalar): Part 4 (1 + 2), and elbo_test has shape () (visible 1,
    # report 2). VAE.loss takes the mean of a scalar, so training is unchanged and the threshold test passes.
    "elbo_batch_mean": (
        {"elbo": (
            "def elbo(x, encoder, decoder, generator=None):\n"
            "    mu, logvar = encoder(x)\n"
            "    z = reparameterize(mu, logvar, generator=generator)\n"
            "    return (bernoulli_log_likelihood(decoder(z), x) - gaussian_kl_standard(mu, logvar)).mean()\n")},
        19.0,
    ),
    # log q(z | x) without its -1/2 sum log sigma^2 (and both normalising constants, which cancel): Part 5 (1 + 2)
    # and iwae_test in the report (2)
    "log_weights_q_missing_log_variance": (
        {"importance_log_weights": (
            "def importance_log_weights(x, encoder, decoder, S, generator=None):\n"
            "    mu, logvar = encoder(x)\n"
            "    mu_s, logvar_s = mu.expand(S, -1, -1), logvar.expand(S, -1, -1)\n"
            "    z = reparameterize(mu_s, logvar_s, generator=generator)\n"
            "    log_likelihood = bernoulli_log_likelihood(decoder(z), x)\n"
            "    log_prior = -0.5 * (z ** 2).sum(dim=-1)\n"
            "    log_q = -0.5 * ((z - mu_s) ** 2 / torch.exp(logvar_s)).sum(dim=-1)\n"
            "    return log_likelihood + log_prior - log_q\n")},
        20.0,
    ),
    # the mean of the log-weights (an estimate of the ELBO, whatever S): Part 6 (1 + 2) and iwae_test (2)
    "iwae_mean_of_logs": (
        {"iwae_bound": (
            "def iwae_bound(log_weights):\n"
            "    return log_weights.mean(dim=0)\n")},
        20.0,
    ),
    # log sum_k w_k, the 1 / S forgotten: the same 5 points
    "iwae_without_one_over_s": (
        {"iwae_bound": (
            "def iwae_bound(log_weights):\n"
            "    return torch.logsumexp(log_weights, dim=0)\n")},
        20.0,
    ),
}


CORRECT_ANSWERS = {
    # other formulas for the same quantities: sigma = sqrt(exp(logvar)) and addcmul; Kingma and Welling's -KL with
    # its sign flipped; binary cross-entropy with logits; torch.distributions for the densities of the weights;
    # logsumexp by hand
    "other_formulas": {
        "reparameterize": (
            "def reparameterize(mu, logvar, generator=None):\n"
            "    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)\n"
            "    return torch.addcmul(mu, torch.sqrt(logvar.exp()), eps)\n"),
        "gaussian_kl_standard": (
            "def gaussian_kl_standard(mu, logvar):\n"
            "    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=-1)\n"),
        "bernoulli_log_likelihood": (
            "def bernoulli_log_likelihood(logits, x):\n"
            "    x = x.expand_as(logits)\n"
            "    return -F.binary_cross_entropy_with_logits(logits, x, reduction='none').sum(dim=-1)\n"),
        "importance_log_weights": (
            "def importance_log_weights(x, encoder, decoder, S, generator=None):\n"
            "    mu, logvar = encoder(x)\n"
            "    std = torch.exp(0.5 * logvar)\n"
            "    z = reparameterize(mu.expand(S, *mu.shape), logvar.expand(S, *logvar.shape), generator=generator)\n"
            "    q = torch.distributions.Normal(mu, std)\n"
            "    prior = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(std))\n"
            "    log_p_xz = bernoulli_log_likelihood(decoder(z), x) + prior.log_prob(z).sum(-1)\n"
            "    return log_p_xz - q.log_prob(z).sum(-1)\n"),
        "iwae_bound": (
            "def iwae_bound(log_weights):\n"
            "    top = log_weights.max(dim=0).values\n"
            "    return top + torch.log(torch.exp(log_weights - top).sum(dim=0) / log_weights.shape[0])\n"),
    },
    # minibatches from shuffled epochs (3 batches of 500 per pass over the 1,500 training images) instead of
    # draws with replacement: another correct training loop, which meets the threshold as well
    "training_with_shuffled_epochs": {
        "experiment": (
            "generator = torch.Generator().manual_seed(2024)\n"
            "vae = VAE(D, n_latent, hidden, generator=generator)\n"
            "optimizer = torch.optim.Adam(vae.parameters(), lr=learning_rate)\n"
            "scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=n_steps)\n"
            "losses = []\n"
            "order, position = torch.randperm(len(x_train), generator=generator), 0\n"
            "for step in range(n_steps):\n"
            "    if position + batch_size > len(x_train):\n"
            "        order, position = torch.randperm(len(x_train), generator=generator), 0\n"
            "    batch = x_train[order[position:position + batch_size]]\n"
            "    position += batch_size\n"
            "    loss = vae.loss(batch, generator=generator)\n"
            "    optimizer.zero_grad()\n"
            "    loss.backward()\n"
            "    optimizer.step()\n"
            "    scheduler.step()\n"
            "    losses.append(float(loss))\n"
            "with torch.no_grad():\n"
            "    elbo_test = vae.elbo(x_test, generator=torch.Generator().manual_seed(eval_seed))\n"
            "    iwae_test = vae.iwae(x_test, n_importance, generator=torch.Generator().manual_seed(eval_seed + 1))\n"
            "mean_elbo = elbo_test.mean().item()\n"
            "mean_iwae = iwae_test.mean().item()\n"
            "print(mean_elbo, mean_iwae)\n"),
    },
}
