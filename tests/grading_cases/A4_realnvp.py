"""Classic wrong answers for A4 and the exact score each must get.

Each wrong answer loses the points of every test cell it fails, including later parts that call
it: ``flow_forward`` calls ``coupling_forward``; ``flow_log_prob`` calls ``flow_forward`` and
``standard_normal_log_prob``; ``flow_sample`` calls ``coupling_inverse``; the experiment trains
``RealNVP``, which uses all of them. The inverse and sampling tests use the tests' own forward
pass, so a wrong forward pass costs nothing there. The experiment's KL test (2 points) recomputes
the trained flow's density independently (reference layers with the student's trained networks and
masks, autograd log-determinant), so it fails when the *training* went wrong; its report test
(2 points) compares the student's ``log_q`` with that density, so it fails when the student's
``log_prob`` is not the flow's true density even if training worked. Such a ``log_prob`` also reports
a KL far below zero, which the visible experiment test refuses (1 point). Margins at the notebook's
seed (oracle KL on 10^5 points; the limit is 0.07): solution 0.019, sums-both-halves 0.036,
mean-over-dimensions 0.234, same masks 0.834, sign-flipped or missing log-det 3.0, base at x 274;
reported KL of the wrong log_probs: -1.82, -4.96, -0.135 (+- 0.005), -3.97, -0.96, -1.83 (+- 0.06).

Each of CORRECT_ANSWERS must get full marks: the masks are tested by their properties (each mask
non-trivial, consecutive masks complements), so other valid patterns pass.
"""

ASSIGNMENT = "A4_realnvp"
NOTEBOOK = "A4_realnvp.ipynb"
MAX_SCORE = 20.0

WRONG_ANSWERS = {
    # -(d/2) log(2 pi) forgotten: Part 1 (2), flow_log_prob (1 + 2: the density integrates to 2 pi),
    # the reported KL is -1.82 (1) and log_q is off by log 2 pi (2). The gradients are unchanged, so
    # training still works and the KL test passes.
    "base_missing_normalisation": (
        {"standard_normal_log_prob": (
            "def standard_normal_log_prob(z):\n"
            "    return -0.5 * (z ** 2).sum(dim=1)\n")},
        12.0,
    ),
    # log-det of the inverse layer (-sum s) in the forward pass: Part 2 (3), flow_forward (1),
    # flow_log_prob (3); training maximises log N(z) - sum s and shrinks everything (KL ~ 3: 2),
    # the reported KL is negative (1) and log_q is not the flow's density (2)
    "coupling_logdet_sign_flipped": (
        {"coupling_forward": (
            "def coupling_forward(x, mask, conditioner):\n"
            "    x_masked = x * mask\n"
            "    s, t = conditioner(x_masked)\n"
            "    s = s * (1 - mask)\n"
            "    t = t * (1 - mask)\n"
            "    z = x_masked + (1 - mask) * (x * torch.exp(s) + t)\n"
            "    return z, -s.sum(dim=1)\n")},
        8.0,
    ),
    # mean over the d coordinates instead of the sum (half the log-det in 2D): the same 12 points
    # (the flow trained with half a log-determinant reaches KL 0.23, far above 0.07)
    "coupling_logdet_mean_over_dimensions": (
        {"coupling_forward": (
            "def coupling_forward(x, mask, conditioner):\n"
            "    x_masked = x * mask\n"
            "    s, t = conditioner(x_masked)\n"
            "    s = s * (1 - mask)\n"
            "    t = t * (1 - mask)\n"
            "    z = x_masked + (1 - mask) * (x * torch.exp(s) + t)\n"
            "    return z, s.mean(dim=1)\n")},
        8.0,
    ),
    # s summed over both halves (its entries at the passed coordinates not masked out): z is right,
    # the log-det is not. Part 2 (3), flow_forward (1), flow_log_prob (3), negative KL (1), report (2).
    # The extra terms do not depend on the transformed coordinates, so the trained map is still good
    # (KL 0.036): the KL test passes.
    "coupling_logdet_sums_both_halves": (
        {"coupling_forward": (
            "def coupling_forward(x, mask, conditioner):\n"
            "    x_masked = x * mask\n"
            "    s, t = conditioner(x_masked)\n"
            "    z = x_masked + (1 - mask) * (x * torch.exp(s) + t)\n"
            "    return z, s.sum(dim=1)\n")},
        10.0,
    ),
    # exp(+s) in the inverse: Part 3 (2) and sampling, which undoes the layers with it (2)
    "inverse_exponent_not_flipped": (
        {"coupling_inverse": (
            "def coupling_inverse(z, mask, conditioner):\n"
            "    z_masked = z * mask\n"
            "    s, t = conditioner(z_masked)\n"
            "    s = s * (1 - mask)\n"
            "    t = t * (1 - mask)\n"
            "    return z_masked + (1 - mask) * (z - t) * torch.exp(s)\n")},
        16.0,
    ),
    # the same mask in every layer: the first coordinate is never transformed. Part 4 (2) and the
    # KL (2: ~0.85); the flow's log_prob is still its true density, so the report passes
    "masks_all_the_same": (
        {"alternating_masks": (
            "def alternating_masks(dim, n_layers):\n"
            "    first = (torch.arange(dim) % 2 == 0).to(torch.get_default_dtype())\n"
            "    return first.repeat(n_layers, 1)\n")},
        16.0,
    ),
    # log p(x) = log N(z): no log-det. flow_log_prob (3), negative KL (1), KL (2: training collapses
    # z), report (2)
    "log_prob_missing_logdet": (
        {"flow_log_prob": (
            "def flow_log_prob(x, masks, conditioners):\n"
            "    z, log_det = flow_forward(x, masks, conditioners)\n"
            "    return standard_normal_log_prob(z)\n")},
        12.0,
    ),
    # the base density evaluated at x instead of z: the same 8 points
    "log_prob_base_at_x": (
        {"flow_log_prob": (
            "def flow_log_prob(x, masks, conditioners):\n"
            "    z, log_det = flow_forward(x, masks, conditioners)\n"
            "    return standard_normal_log_prob(x) + log_det\n")},
        12.0,
    ),
    # the layers undone in the forward order: Part 6 (2)
    "sample_layers_in_forward_order": (
        {"flow_sample": (
            "def flow_sample(n, masks, conditioners, generator=None):\n"
            "    x = torch.randn(n, masks.shape[1], generator=generator)\n"
            "    for k in range(len(conditioners)):\n"
            "        x = coupling_inverse(x, masks[k], conditioners[k])\n"
            "    return x\n")},
        18.0,
    ),
}


CORRECT_ANSWERS = {
    # the checkerboard shifted by one: layer 0 transforms the even coordinates and passes the odd ones
    # (in the experiment, x_1 is transformed first)
    "masks_transform_even_first": {
        "alternating_masks": (
            "def alternating_masks(dim, n_layers):\n"
            "    j = torch.arange(dim)\n"
            "    k = torch.arange(n_layers)[:, None]\n"
            "    return ((j + k) % 2 == 1).to(torch.get_default_dtype())\n")},
    # the first half of the coordinates against the second half, swapped from layer to layer
    "masks_half_split": {
        "alternating_masks": (
            "def alternating_masks(dim, n_layers):\n"
            "    first_half = (torch.arange(dim) < dim // 2).to(torch.get_default_dtype())\n"
            "    return torch.stack([first_half if k % 2 == 0 else 1.0 - first_half for k in range(n_layers)])\n")},
}
