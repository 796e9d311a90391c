"""Classic wrong answers for A9 and the exact score each must get.

Each wrong answer loses the points of every test cell it fails, including later parts that call it:
``MultiHeadAttention`` calls ``attention``; ``Block`` calls ``MultiHeadAttention``; ``SpinTransformer``
calls ``Block``, ``causal_mask`` and ``sequence_log_prob``; the experiment trains the student's
``SpinTransformer``. The tests of ``Block`` and ``MultiHeadAttention`` compare with PyTorch's
``nn.MultiheadAttention`` holding the student's weights, so an error in the attention shows there too.

Part 6's threshold (KL <= 0.05 nats, in the notebook's last hidden test) was calibrated with the
instructor's solution and the notebook's budget (n_records = 5,000 exact records of the critical TFIM
chain N = 6, SpinTransformer(6) with d_model 16, 2 heads, 2 blocks, 300 Adam steps of batch 256, lr 1e-2):
over 24 seeds (seed 0: the notebook's data seed 3 with weights and minibatch seeds 0; seeds 1-23: data
seed 100 + s, weights and minibatches seed s) the exact KL was 0.0041-0.0212 nats (mean 0.0087, standard
deviation 0.0040). The threshold is over twice the largest value seen (10 standard deviations above the
mean). A model that is not normalised fails the test before its KL is read.

What each wrong answer loses (cells of the grading run): attention scaled by d: attention (1 + 2), the
causal-mask, multi-head and block hidden tests that run attention (1 + 3 + 3) = 15/25 (the trained
model still meets the threshold); mask after the softmax or softmax over the queries: also the spin
model's normalisation and causality (1 + 2) and the experiment (1 + 3) = 8/25; mask without the diagonal
(NaN rows): every cell from Part 2 on except the visible attention/multi-head/block/sequence tests = 8/25;
mask one too many: Part 2 (1 + 1), the spin model (1 + 2) and the experiment (1 + 3) = 16/25; heads in
the wrong order: multi-head and block hidden (3 + 3) = 19/25; block norm on the input: block hidden (3)
= 22/25; eos forgotten: sequence_log_prob hidden (2) = 23/25; no shift: spin model (1 + 2) and
experiment (1 + 3) = 18/25.
"""

ASSIGNMENT = "A9_mini_transformer"
NOTEBOOK = "A9_mini_transformer.ipynb"
MAX_SCORE = 25.0

WRONG_ANSWERS = {
    # scores divided by d_k instead of sqrt(d_k)
    "attention_scaled_by_d": (
        {"attention": (
            "def attention(query, key, value, mask=None):\n"
            "    d_k = query.shape[-1]\n"
            "    scores = query @ key.transpose(-2, -1) / d_k\n"
            "    if mask is not None:\n"
            "        scores = scores.masked_fill(~mask, float('-inf'))\n"
            "    weights = torch.softmax(scores, dim=-1)\n"
            "    return weights @ value, weights\n")},
        15.0,
    ),
    # the mask applied after the softmax: masked weights are zero but rows no longer sum to one
    "attention_mask_after_softmax": (
        {"attention": (
            "def attention(query, key, value, mask=None):\n"
            "    d_k = query.shape[-1]\n"
            "    weights = torch.softmax(query @ key.transpose(-2, -1) / math.sqrt(d_k), dim=-1)\n"
            "    if mask is not None:\n"
            "        weights = weights * mask\n"
            "    return weights @ value, weights\n")},
        8.0,
    ),
    # softmax over the queries (dim=-2) instead of the keys
    "attention_softmax_over_queries": (
        {"attention": (
            "def attention(query, key, value, mask=None):\n"
            "    d_k = query.shape[-1]\n"
            "    scores = query @ key.transpose(-2, -1) / math.sqrt(d_k)\n"
            "    if mask is not None:\n"
            "        scores = scores.masked_fill(~mask, float('-inf'))\n"
            "    weights = torch.softmax(scores, dim=-2)\n"
            "    return weights @ value, weights\n")},
        8.0,
    ),
    # a strict mask: position d may not read itself (its input holds x_{d-1}, the most recent symbol)
    "causal_mask_without_diagonal": (
        {"causal_mask": (
            "def causal_mask(L):\n"
            "    return torch.ones(L, L, dtype=torch.bool).tril(-1)\n")},
        8.0,
    ),
    # the reverse: the mask lets each position read the next one as well
    "causal_mask_one_too_many": (
        {"causal_mask": (
            "def causal_mask(L):\n"
            "    return torch.ones(L, L, dtype=torch.bool).tril(1)\n")},
        16.0,
    ),
    # heads cut with a view straight to (n, heads, L, d_k) and merged with a plain reshape
    "heads_split_in_the_wrong_order": (
        {"multi_head": (
            "class MultiHeadAttention(nn.Module):\n"
            "    def __init__(self, d_model, n_heads):\n"
            "        super().__init__()\n"
            "        if d_model % n_heads:\n"
            "            raise ValueError('d_model must be divisible by n_heads')\n"
            "        self.d_model, self.n_heads, self.d_k = d_model, n_heads, d_model // n_heads\n"
            "        self.query = nn.Linear(d_model, d_model)\n"
            "        self.key = nn.Linear(d_model, d_model)\n"
            "        self.value = nn.Linear(d_model, d_model)\n"
            "        self.output = nn.Linear(d_model, d_model)\n"
            "\n"
            "    def forward(self, x, mask=None):\n"
            "        n, L, _ = x.shape\n"
            "        split = lambda t: t.view(n, self.n_heads, L, self.d_k)\n"
            "        out, _ = attention(split(self.query(x)), split(self.key(x)), split(self.value(x)), mask)\n"
            "        return self.output(out.reshape(n, L, self.d_model))\n")},
        19.0,
    ),
    # the second layer norm applied to the block's input instead of the updated x
    "block_second_norm_on_the_input": (
        {"block": (
            "class Block(nn.Module):\n"
            "    def __init__(self, d_model, n_heads, n_hidden):\n"
            "        super().__init__()\n"
            "        self.norm1 = nn.LayerNorm(d_model)\n"
            "        self.attention = MultiHeadAttention(d_model, n_heads)\n"
            "        self.norm2 = nn.LayerNorm(d_model)\n"
            "        self.mlp = nn.Sequential(nn.Linear(d_model, n_hidden), nn.GELU(), nn.Linear(n_hidden, d_model))\n"
            "\n"
            "    def forward(self, x, mask=None):\n"
            "        return x + self.attention(self.norm1(x), mask) + self.mlp(self.norm2(x))\n")},
        22.0,
    ),
    # the eos term forgotten: positions 0..length-1 only
    "eos_term_forgotten": (
        {"sequence_log_prob": (
            "def sequence_log_prob(logits, targets, lengths=None):\n"
            "    log_p = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)\n"
            "    if lengths is not None:\n"
            "        inside = torch.arange(targets.shape[1])[None, :] < lengths[:, None]\n"
            "        log_p = torch.where(inside, log_p, torch.zeros_like(log_p))\n"
            "    return log_p.sum(dim=-1)\n")},
        23.0,
    ),
    # the inputs not shifted: output d reads its own spin, and the model is no distribution
    "spin_transformer_without_shift": (
        {"spin_transformer": (
            'class SpinTransformer(nn.Module):\n'
            '    def __init__(self, N, d_model=16, n_heads=2, n_layers=2, n_hidden=32):\n'
            '        super().__init__()\n'
            '        self.N = N\n'
            '        self.embedding = nn.Embedding(3, d_model)\n'
            '        self.position = nn.Parameter(0.1 * torch.randn(N, d_model))\n'
            '        self.blocks = nn.ModuleList(Block(d_model, n_heads, n_hidden) for _ in range(n_layers))\n'
            '        self.norm = nn.LayerNorm(d_model)\n'
            '        self.head = nn.Linear(d_model, 2)\n'
            '\n'
            '    def forward(self, s):\n'
            '        tokens = ((s + 1) / 2).long()\n'
            '        h = self.embedding(tokens) + self.position\n'
            '        mask = causal_mask(self.N)\n'
            '        for block in self.blocks:\n'
            '            h = block(h, mask)\n'
            '        return self.head(self.norm(h))\n'
            '\n'
            '    def log_prob(self, s):\n'
            '        return sequence_log_prob(self(s), ((s + 1) / 2).long())\n'
            '\n'
            '    def loss(self, s):\n'
            '        return -self.log_prob(s).mean()\n'
        )},
        18.0,
    ),
}

CORRECT_ANSWERS = {}
