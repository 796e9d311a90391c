"""Classic wrong answers for A3 and the exact score each must get.

Each wrong answer loses the points of every test cell it fails, including later parts that call
it: ``MADE`` uses ``made_masks``, ``MaskedLinear`` and ``spin_log_prob``; the experiment (Part 9)
trains the student's ``MADE`` and reports ``exact_kl``. The sampler and the dependency check are
tested on the tests' own autoregressive models, so they cost only their own points.

Part 9's threshold (KL <= 0.06 nats, in the notebook's last hidden test) was calibrated with the
instructor's solution and the notebook's budget (n_train = 10,000 exact samples of the 3x3 Ising
model at T_c, MADE(9, [64]), 1,000 Adam steps of batch 256, lr 1e-2): over 200 independent seeds of
the data, the initial weights and the minibatches the exact KL was 0.0075-0.0273 nats (mean 0.0150,
standard deviation 0.0030); with the notebook's own data (seed 3), 30 seeds of the weights and
minibatches gave 0.0115-0.0309; minibatches from shuffled epochs instead of draws with replacement,
30 seeds, 0.0085-0.0168. The threshold is about twice the largest value seen (15 standard
deviations above the mean). Models or loops with a flaw are far above it: independent spins
log 512 - H = 3.61 nats; hidden masks with > instead of >= (spin i cannot see spin i - 1)
0.545-0.556 (8 seeds); the same minibatch in every step 0.81-0.95, no optimizer.zero_grad() 30-59
(3 seeds each).

Each of CORRECT_ANSWERS must get full marks: the masks are tested by their properties, so any valid
way of spreading the hidden degrees passes.
"""

ASSIGNMENT = "A3_autoregressive"
NOTEBOOK = "A3_autoregressive.ipynb"
MAX_SCORE = 25.0

WRONG_ANSWERS = {
    # softmax over the variables instead of the values: Part 1 (1 + 2)
    "categorical_softmax_over_variables": (
        {"categorical_log_prob": (
            "def categorical_log_prob(logits, x):\n"
            "    log_conditionals = torch.log_softmax(logits, dim=1)\n"
            "    return torch.gather(log_conditionals, -1, x.unsqueeze(-1)).squeeze(-1).sum(dim=-1)\n")},
        22.0,
    ),
    # logits[:, i] paired with x[:, i + 1] (the shift of next-token models, here one too many): Part 1 (1 + 2)
    "categorical_shifted_by_one": (
        {"categorical_log_prob": (
            "def categorical_log_prob(logits, x):\n"
            "    log_conditionals = torch.log_softmax(logits, dim=-1)\n"
            "    picked = torch.gather(log_conditionals[:, :-1], -1, x[:, 1:].unsqueeze(-1)).squeeze(-1)\n"
            "    return picked.sum(dim=-1)\n")},
        22.0,
    ),
    # log(softmax) underflows to -inf for logits of size 1000: only the hidden test of Part 1 (2)
    "categorical_log_of_softmax": (
        {"categorical_log_prob": (
            "def categorical_log_prob(logits, x):\n"
            "    log_conditionals = torch.log(torch.softmax(logits, dim=-1))\n"
            "    return torch.gather(log_conditionals, -1, x.unsqueeze(-1)).squeeze(-1).sum(dim=-1)\n")},
        23.0,
    ),
    # the logistic-regression formula x l - log(1 + e^l) for x in {0, 1}, used with s = +-1: Part 2 (1 + 1),
    # MADE's log_prob (visible 1) and normalisation (hidden 2), and the trained model is not normalised
    # (hidden 1 + 2); its kl_model is still the KL of its own log_prob (visible passes)
    "spin_log_prob_zero_one_formula": (
        {"spin_log_prob": (
            "def spin_log_prob(logits, s):\n"
            "    return (s * logits - F.softplus(logits)).sum(dim=-1)\n")},
        17.0,
    ),
    # output mask with >= : output i sees input i. Part 3 (3), MADE's hidden tests (2), and the trained model
    # is neither autoregressive nor normalised (1 + 2); its KL is still a finite number (visible passes)
    "masks_output_off_by_one": (
        {"made_masks": (
            "def made_masks(N, hidden_sizes):\n"
            "    dtype = torch.get_default_dtype()\n"
            "    input_degrees = torch.arange(1, N + 1)\n"
            "    degrees = [input_degrees] + [1 + torch.arange(H) % (N - 1) for H in hidden_sizes]\n"
            "    masks = [(upper[:, None] >= lower[None, :]).to(dtype) for lower, upper in zip(degrees[:-1], degrees[1:])]\n"
            "    masks.append((input_degrees[:, None] >= degrees[-1][None, :]).to(dtype))\n"
            "    return masks\n")},
        17.0,
    ),
    # hidden masks with > : still autoregressive and normalised, but output i never sees input i - 1.
    # Part 3 (3), MADE's hidden test (2: some j < i is never seen), and the experiment's KL (2: ~0.55 nats)
    "masks_hidden_strict": (
        {"made_masks": (
            "def made_masks(N, hidden_sizes):\n"
            "    dtype = torch.get_default_dtype()\n"
            "    input_degrees = torch.arange(1, N + 1)\n"
            "    degrees = [input_degrees] + [1 + torch.arange(H) % (N - 1) for H in hidden_sizes]\n"
            "    masks = [(upper[:, None] > lower[None, :]).to(dtype) for lower, upper in zip(degrees[:-1], degrees[1:])]\n"
            "    masks.append((input_degrees[:, None] > degrees[-1][None, :]).to(dtype))\n"
            "    return masks\n")},
        18.0,
    ),
    # the weights are masked once in __init__ and forward is a plain linear layer: the first optimiser step
    # brings the forbidden connections back. MaskedLinear's hidden test (1), MADE's hidden test with new
    # weights (2), and the trained model is not autoregressive (1 + 2)
    "masked_linear_masks_only_at_init": (
        {"masked_linear": (
            "class MaskedLinear(nn.Linear):\n"
            "    def __init__(self, mask, bias=True):\n"
            "        out_features, in_features = mask.shape\n"
            "        super().__init__(in_features, out_features, bias=bias)\n"
            "        self.register_buffer('mask', mask.detach().clone().to(self.weight.dtype))\n"
            "        with torch.no_grad():\n"
            "            self.weight.mul_(self.mask)\n"
            "\n"
            "    def forward(self, x):\n"
            "        return super().forward(x)\n")},
        19.0,
    ),
    # the summed NLL instead of the mean: MADE's visible test (1). Adam is nearly invariant to the scale of
    # the loss, so the experiment still meets the threshold
    "made_loss_sum_not_mean": (
        {"made": (
            "class MADE(nn.Module):\n"
            "    def __init__(self, N, hidden_sizes):\n"
            "        super().__init__()\n"
            "        self.N = N\n"
            "        layers = []\n"
            "        for index, mask in enumerate(made_masks(N, hidden_sizes)):\n"
            "            if index > 0:\n"
            "                layers.append(nn.ReLU())\n"
            "            layers.append(MaskedLinear(mask))\n"
            "        self.net = nn.Sequential(*layers)\n"
            "\n"
            "    def forward(self, s):\n"
            "        return self.net(s)\n"
            "\n"
            "    def log_prob(self, s):\n"
            "        return spin_log_prob(self(s), s)\n"
            "\n"
            "    def loss(self, s):\n"
            "        return -self.log_prob(s).sum()\n")},
        24.0,
    ),
    # every spin drawn from one forward pass on the empty configuration (samples never fed back): Part 7 (1 + 2)
    "sampling_in_one_pass": (
        {"sample_spins": (
            "def sample_spins(model, N, n, generator=None):\n"
            "    with torch.no_grad():\n"
            "        p_up = torch.sigmoid(model(torch.zeros(n, N)))\n"
            "    u = torch.rand(n, N, generator=generator)\n"
            "    return torch.where(u < p_up, 1.0, -1.0)\n")},
        22.0,
    ),
    # KL(Q || P) instead of KL(P || Q): Part 8 (1 + 2), and the experiment's kl_model is not the KL of the
    # model (visible 1); the hidden experiment tests compute their own KL and pass
    "kl_reversed": (
        {"exact_checks": (
            "def all_spin_configurations(N):\n"
            "    bits = (torch.arange(2 ** N)[:, None] >> torch.arange(N)) & 1\n"
            "    return 2.0 * bits.to(torch.float64) - 1.0\n"
            "\n"
            "def log_total_probability(model, N):\n"
            "    with torch.no_grad():\n"
            "        return float(torch.logsumexp(model.log_prob(all_spin_configurations(N)), dim=0))\n"
            "\n"
            "def exact_kl(p_data, log_q):\n"
            "    return float((torch.exp(log_q) * (log_q - torch.log(p_data))).sum())\n")},
        21.0,
    ),
    # a bookkeeping slip: the losses kept as tensors, not Python floats. Only the visible experiment test
    # (1) checks that; the model is trained all the same, and the hidden tests of the experiment judge
    # the model on their own
    "train_losses_hold_tensors": (
        {"experiment": (
            "torch.manual_seed(0)                            # the initial weights\n"
            "generator = torch.Generator().manual_seed(0)    # the minibatches\n"
            "model = MADE(N, hidden_sizes)\n"
            "optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)\n"
            "train_losses = []\n"
            "for step in range(n_steps):\n"
            "    batch = train_spins[torch.randint(n_train, (batch_size,), generator=generator)]\n"
            "    loss = model.loss(batch)\n"
            "    optimizer.zero_grad()\n"
            "    loss.backward()\n"
            "    optimizer.step()\n"
            "    train_losses.append(loss.detach())\n"
            "with torch.no_grad():\n"
            "    kl_model = exact_kl(p_data, model.log_prob(all_spin_configurations(N)))\n"
            "print(f\"final training loss {train_losses[-1]:.4f} nats; exact KL(P_data || P_model) = {kl_model:.4f} nats\")\n")},
        24.0,
    ),
}


CORRECT_ANSWERS = {
    # hidden degrees spread in blocks instead of cyclically: unit k of a layer of width H has degree
    # 1 + k (N - 1) // H, so a layer with H >= N - 1 uses every degree 1..N-1 (MADE(9, [64]): 8 units each)
    "masks_degrees_in_blocks": {
        "made_masks": (
            "def made_masks(N, hidden_sizes):\n"
            "    if N < 2:\n"
            "        raise ValueError(f'a MADE needs N >= 2 variables; got N={N}')\n"
            "    dtype = torch.get_default_dtype()\n"
            "    input_degrees = torch.arange(1, N + 1)\n"
            "    degrees = [input_degrees] + [1 + torch.arange(H) * (N - 1) // H for H in hidden_sizes]\n"
            "    masks = [(upper[:, None] >= lower[None, :]).to(dtype) for lower, upper in zip(degrees[:-1], degrees[1:])]\n"
            "    masks.append((input_degrees[:, None] > degrees[-1][None, :]).to(dtype))\n"
            "    return masks\n")},
}
