r"""Autoencoders and independent component analysis (chapter 7).

Equations are cited by the labels they carry in ``book/07_autoencoders.md``.

**Autoencoders** (eq. ``ch7-eq-reconstruction``). An encoder :math:`f_\theta` maps a data point
:math:`x\in\mathbb R^D` to a code :math:`z = f_\theta(x)\in\mathbb R^{d_z}` with :math:`d_z < D`, a decoder
:math:`g_\psi` maps it back, and both are trained to minimise the reconstruction error

.. math:: L(\theta, \psi) = \frac1N\sum_{n=1}^N \big\|x_n - g_\psi(f_\theta(x_n))\big\|^2 ,

the squared error summed over the :math:`D` pixels and averaged over the examples. With linear
maps the optimum spans the top-:math:`d_z` principal subspace of the data (eq. ``ch7-eq-pca``);
:class:`LinearAutoencoder` is that case, :class:`MLPAutoencoder` and :class:`ConvAutoencoder` the
deep ones. A **denoising** autoencoder (eq. ``ch7-eq-denoising``) reconstructs the clean
:math:`x` from a corrupted :math:`\tilde x = x + \sigma\epsilon`, :math:`\epsilon\sim\mathcal N(0, I)`;
:class:`DenoisingAutoencoder` wraps any of the above.

*How autoencoders fit the protocol.* An autoencoder is not a density model: nothing in it
defines :math:`P_\theta(x)`. So ``log_prob_kind = "none"`` and ``log_prob`` raises an error that
says so; ``loss`` is the reconstruction error above. ``sample`` is the naive sampler that the
chapter shows failing (section ``ch7-sampling``): after :meth:`Autoencoder.fit_latent_gaussian`
has fitted a Gaussian :math:`\mathcal N(m, C)` to the codes of the training data, it decodes
:math:`z\sim\mathcal N(m, C)`. The decoded images are draws from *a* distribution, but not one
the training made close to :math:`P_\text{data}`, and no likelihood is attached to them.

**ICA by maximum likelihood** (eqs. ``ch7-eq-ica-model`` to ``ch7-eq-ica-natural``). The data are
a linear mixture :math:`x = A s` of :math:`D` independent sources with density
:math:`p_s(s) = \prod_i p(s_i)`. With the unmixing matrix :math:`W = A^{-1}` the change of variables
gives an exact log-likelihood (eq. ``ch7-eq-ica-loglik``),

.. math:: \log p(x) = \sum_{i=1}^D \log p\big((Wx)_i\big) + \log|\det W| ,

here with the super-Gaussian prior :math:`p(s) = 1/(\pi\cosh s)`. Its gradient (eq.
``ch7-eq-ica-gradient``) and the natural-gradient update (eq. ``ch7-eq-ica-natural``) are

.. math:: \frac{\partial\log p(x)}{\partial W} = W^{-\top} + \varphi(a)\,x^\top, \qquad
          \Delta W = \eta\,\big(I + \varphi(a)\,a^\top\big)\,W, \qquad a = Wx,\ \varphi(a) = -\tanh a,

averaged over the data. :class:`LinearICA` is a :class:`~gmcourse.protocol.GenerativeModel` with an
exact ``log_prob``; :func:`fit_ica` trains it with either update.

Shapes: data are ``(n, D)`` tensors (the 8x8 digits flattened to ``D = 64``), codes ``(n, d_z)`` with ``d_z = latent_dim``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gmcourse.flows import warmup_cosine_lr
from gmcourse.protocol import GenerativeModel
from gmcourse.utils import check_points, make_generator, positive_int as _positive_int, progress as progress_bar

__all__ = ["Autoencoder", "LinearAutoencoder", "MLPAutoencoder", "ConvAutoencoder", "DenoisingAutoencoder",
           "train", "principal_angles", "LinearICA", "fit_ica", "amari_index", "sech_log_prob", "sample_sech"]


def _check_points(x, dim: int, what: str = "x") -> torch.Tensor:
    return check_points(x, dim, what, hint_if_3d="flatten 8x8 images with x.reshape(len(x), -1)")


# ----------------------------------------------------------------------------- autoencoders

class Autoencoder(GenerativeModel):
    r"""Encoder :math:`f_\theta`, decoder :math:`g_\psi` and the reconstruction loss (eq. ch7-eq-reconstruction).

    ``encoder`` maps ``(n, dim)`` to ``(n, latent_dim)``, ``decoder`` the other way. Not a density
    model: ``log_prob`` raises, and ``sample`` is the naive "Gaussian fitted to the codes" sampler
    (see the module docstring), available after :meth:`fit_latent_gaussian`.
    """

    log_prob_kind = "none"

    def __init__(self, encoder: nn.Module, decoder: nn.Module, dim: int, latent_dim: int):
        super().__init__()
        self.dim = _positive_int(dim, "dim")
        self.latent_dim = _positive_int(latent_dim, "latent_dim")
        self.encoder, self.decoder = encoder, decoder
        self.register_buffer("latent_mean", None)
        self.register_buffer("latent_cholesky", None)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        r"""Codes :math:`z = f_\theta(x)`, (n, D) -> (n, d_z)."""
        return self.encoder(_check_points(x, self.dim))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        r"""Reconstructions :math:`g_\psi(z)`, (n, d_z) -> (n, D)."""
        return self.decoder(_check_points(z, self.latent_dim, "z"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\hat x = g_\psi(f_\theta(x))`, (n, D) -> (n, D)."""
        return self.decode(self.encode(x))

    def reconstruction_error(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\|x_n - g_\psi(f_\theta(x_n))\|^2` per example, summed over the D pixels, shape (n,)."""
        return ((x - self(x)) ** 2).sum(dim=-1)

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean reconstruction error of the batch (eq. ch7-eq-reconstruction); ``generator`` is unused here."""
        return self.reconstruction_error(x).mean()

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} is an autoencoder: it defines no density P_theta(x), only a reconstruction "
            "(log_prob_kind = 'none'). Use reconstruction_error(x) to score data, or a variational autoencoder "
            "(chapter 8), whose ELBO bounds log p(x) from below."
        )

    @torch.no_grad()
    def fit_latent_gaussian(self, x: torch.Tensor) -> "Autoencoder":
        r"""Fit :math:`\mathcal N(m, C)` to the codes of ``x`` (sample mean and covariance) for :meth:`sample`."""
        z = self.encode(x)  # (n, d_z)
        if len(z) <= self.latent_dim:
            raise ValueError(f"need more than latent_dim = {self.latent_dim} points to fit a covariance, got {len(z)}")
        mean = z.mean(dim=0)  # (d_z,)
        cov = torch.cov(z.T) + 1e-6 * torch.eye(self.latent_dim, dtype=z.dtype, device=z.device)  # (d_z, d_z)
        self.latent_mean, self.latent_cholesky = mean, torch.linalg.cholesky(cov)
        return self

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, seed: int | None = None) -> torch.Tensor:
        r"""Decode ``n`` codes :math:`z\sim\mathcal N(m, C)` fitted by :meth:`fit_latent_gaussian`, shape (n, D).

        This is the naive sampler of section ch7-sampling, kept because the chapter shows why it
        fails: the codes of real data do not fill a Gaussian, so many draws land where the
        decoder was never trained. It is not a sample from a model of :math:`P_\text{data}`.
        """
        _positive_int(n, "n")
        if self.latent_mean is None:
            raise RuntimeError("call fit_latent_gaussian(x_train) first: an autoencoder has no distribution of "
                               "codes to sample from until one is fitted to the codes of data")
        generator = make_generator(seed=seed, generator=generator)
        eps = torch.randn(n, self.latent_dim, generator=generator, dtype=self.latent_mean.dtype)  # (n, d_z)
        z = self.latent_mean + eps.to(self.latent_mean.device) @ self.latent_cholesky.T  # (n, d_z)
        return self.decode(z)

    @torch.no_grad()
    def interpolate(self, x0: torch.Tensor, x1: torch.Tensor, n_steps: int = 8) -> torch.Tensor:
        r"""Decoded straight line between the codes of two points (eq. ch7-eq-interpolation), shape (n_steps, D).

        :math:`g_\psi\big((1-\alpha) f_\theta(x_0) + \alpha f_\theta(x_1)\big)` for ``n_steps``
        values of :math:`\alpha` from 0 to 1.
        """
        _positive_int(n_steps, "n_steps", 2)
        z = self.encode(torch.stack([x0.reshape(-1), x1.reshape(-1)]))  # (2, d_z)
        alpha = torch.linspace(0, 1, n_steps, dtype=z.dtype, device=z.device)[:, None]  # (n_steps, 1)
        return self.decode((1 - alpha) * z[0] + alpha * z[1])


class LinearAutoencoder(Autoencoder):
    r"""Affine encoder and decoder, :math:`z = V x + c`, :math:`\hat x = U z + b` (eq. ch7-eq-pca).

    At the optimum the decoder's columns span the top-``latent_dim`` principal subspace of the
    data (Baldi and Hornik, 1989), though they need not be orthonormal nor the principal
    directions themselves: any invertible mixing of them, undone by the encoder, does as well.
    How close a trained one is follows from its loss alone (eq. ch7-eq-angle-bound): an excess
    :math:`\Delta L` over PCA's optimum bounds the principal angles to the principal subspace by
    :math:`\sum_i\sin^2\vartheta_i \le \Delta L/(\lambda_{d_z} - \lambda_{d_z+1})`.
    """

    def __init__(self, dim: int = 64, latent_dim: int = 8):
        _positive_int(dim, "dim"), _positive_int(latent_dim, "latent_dim")
        super().__init__(nn.Linear(dim, latent_dim), nn.Linear(latent_dim, dim), dim, latent_dim)

    @property
    def decoder_weight(self) -> torch.Tensor:
        """:math:`U`, shape (D, d_z): its column space is what training aligns with the principal subspace."""
        return self.decoder.weight


class MLPAutoencoder(Autoencoder):
    """Fully connected encoder and decoder, mirror images of each other, with a sigmoid output in [0, 1].

    ``hidden`` lists the widths of the encoder's hidden layers (the decoder uses them reversed).
    Sized for the 8x8 digits in ``form="float"`` (pixels in [0, 1]).
    """

    def __init__(self, dim: int = 64, latent_dim: int = 8, hidden=(128, 64)):
        sizes = [_positive_int(dim, "dim")] + [_positive_int(h, "hidden width") for h in hidden]
        _positive_int(latent_dim, "latent_dim")

        def stack(widths, last):
            layers = []
            for fan_in, fan_out in zip(widths[:-1], widths[1:]):
                layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
            layers[-1] = last  # the final layer gets its own activation (none for codes, sigmoid for pixels)
            return nn.Sequential(*layers)

        super().__init__(stack(sizes + [latent_dim], nn.Identity()), stack([latent_dim] + sizes[::-1], nn.Sigmoid()),
                         dim, latent_dim)


class ConvAutoencoder(Autoencoder):
    r"""Convolutional encoder and transposed-convolution decoder for 8x8 images, flattened to (n, 64).

    Encoder: 3x3 convolution (``channels`` maps, 8x8), strided 3x3 convolution (``2 * channels``
    maps, 4x4), a linear layer to the code. Decoder: a linear layer back to ``2 * channels``
    4x4 maps, a 4x4 transposed convolution with stride 2 (8x8), a 3x3 convolution to one map, sigmoid.
    Weight sharing makes the first layers detect the same stroke anywhere in the image.
    """

    def __init__(self, latent_dim: int = 8, channels: int = 16):
        c = _positive_int(channels, "channels")
        encoder = nn.Sequential(
            nn.Unflatten(1, (1, 8, 8)),  # (n, 64) -> (n, 1, 8, 8)
            nn.Conv2d(1, c, 3, padding=1), nn.ReLU(),  # (n, c, 8, 8)
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.ReLU(),  # (n, 2c, 4, 4)
            nn.Flatten(), nn.Linear(2 * c * 16, _positive_int(latent_dim, "latent_dim")),  # (n, d_z)
        )
        decoder = nn.Sequential(
            nn.Linear(latent_dim, 2 * c * 16), nn.ReLU(), nn.Unflatten(1, (2 * c, 4, 4)),  # (n, 2c, 4, 4)
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1), nn.ReLU(),  # (n, c, 8, 8)
            nn.Conv2d(c, 1, 3, padding=1), nn.Sigmoid(), nn.Flatten(),  # (n, 64)
        )
        super().__init__(encoder, decoder, 64, latent_dim)


class DenoisingAutoencoder(Autoencoder):
    r"""Any autoencoder trained to undo Gaussian noise (eq. ch7-eq-denoising).

    ``loss(x)`` corrupts the batch, :math:`\tilde x = x + \sigma\epsilon`, and scores the
    reconstruction of ``autoencoder`` from :math:`\tilde x` against the clean :math:`x`. A new
    :math:`\epsilon` is drawn at every call (from ``generator`` when given), so training sees a
    fresh corruption of every example at every step. Encoding and decoding are those of the
    wrapped autoencoder, whose parameters are trained. For zero-mean data with covariance
    :math:`\Sigma` and a linear map :math:`\hat x = W\tilde x`, the optimum is
    :math:`W = \Sigma(\Sigma + \sigma^2 I)^{-1}` (eq. ch7-eq-dae-linear).
    """

    def __init__(self, autoencoder: Autoencoder, noise_std: float = 0.2):
        if not isinstance(autoencoder, Autoencoder):
            raise TypeError(f"autoencoder must be a gmcourse.autoencoders.Autoencoder, got {type(autoencoder).__name__}")
        if not (isinstance(noise_std, (int, float)) and not isinstance(noise_std, bool) and noise_std > 0):
            raise ValueError(f"noise_std must be a number > 0 (the standard deviation sigma of the corruption), "
                             f"got {noise_std!r}")
        super().__init__(autoencoder.encoder, autoencoder.decoder, autoencoder.dim, autoencoder.latent_dim)
        self.autoencoder = autoencoder
        self.noise_std = float(noise_std)

    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        r""":math:`\tilde x = x + \sigma\epsilon` with :math:`\epsilon\sim\mathcal N(0, I)`, same shape as ``x``."""
        _check_points(x, self.dim)
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device if generator else "cpu")
        return x + self.noise_std * eps.to(x.device)

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        r""":math:`\frac1n\sum_n\|x_n - g_\psi(f_\theta(\tilde x_n))\|^2` on a fresh corruption (eq. ch7-eq-denoising)."""
        return ((x - self(self.corrupt(x, generator))) ** 2).sum(dim=-1).mean()


def train(model: Autoencoder, x: torch.Tensor, steps: int = 2000, batch_size: int = 128, lr: float = 3e-3,
          seed: int = 0, progress: bool | None = None) -> list[float]:
    """Train ``model`` on the data ``x`` (n, D) for exactly ``steps`` Adam steps; returns the loss of every step.

    Mini-batches are drawn without replacement within an epoch (the whole set when ``batch_size``
    is at least n), from a generator seeded with ``seed``, which also draws a denoising
    autoencoder's corruption. The learning rate decays from ``lr`` to 0 on a cosine over the run,
    so the last steps settle into the optimum rather than jitter around it. Same ``seed``, same data,
    same initial weights: same result. ``progress=False`` hides the progress bar (``None``: shown
    except under nbgrader).
    """
    if not isinstance(model, Autoencoder):
        raise TypeError(f"model must be a gmcourse.autoencoders.Autoencoder, got {type(model).__name__}")
    _check_points(x, model.dim)
    steps, batch_size = _positive_int(steps, "steps"), _positive_int(batch_size, "batch_size")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a number > 0, got {lr!r}")
    generator = make_generator(seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    order, cursor, losses = torch.randperm(len(x), generator=generator), 0, []
    for step in progress_bar(range(steps), desc=type(model).__name__,
                         disable=None if progress is None else not progress):
        if cursor + batch_size > len(x) and batch_size < len(x):
            order, cursor = torch.randperm(len(x), generator=generator), 0
        batch = x if batch_size >= len(x) else x[order[cursor:cursor + batch_size].to(x.device)]
        cursor += batch_size
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine_lr(step / steps, lr, warmup_fraction=0.0)
        loss = model.loss(batch, generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def principal_angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r"""Principal angles (radians, ascending) between the column spaces of ``a`` (D, k) and ``b`` (D, l).

    With orthonormal bases :math:`Q_a, Q_b` (QR), the cosines of the angles are the singular
    values of :math:`Q_a^\top Q_b`. All zero iff one space contains the other.
    """
    for m, name in ((a, "a"), (b, "b")):
        if not isinstance(m, torch.Tensor) or m.dim() != 2:
            raise ValueError(f"{name} must be a 2D tensor (D, k) whose columns span a subspace")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b must have the same number of rows D, got {a.shape[0]} and {b.shape[0]}")
    qa, qb = torch.linalg.qr(a.double())[0], torch.linalg.qr(b.double())[0]
    cosines = torch.linalg.svdvals(qa.T @ qb).clamp(max=1.0)  # descending cosines = ascending angles
    return torch.arccos(cosines)


# ----------------------------------------------------------------------------- ICA

def sech_log_prob(s: torch.Tensor) -> torch.Tensor:
    r""":math:`\log p(s) = -\log\cosh s - \log\pi`, the normalised density :math:`1/(\pi\cosh s)`, elementwise.

    Written as :math:`-|s| - \log(1 + e^{-2|s|}) + \log 2 - \log\pi`, which does not overflow.
    """
    return -s.abs() - torch.log1p(torch.exp(-2 * s.abs())) + math.log(2 / math.pi)


def sample_sech(shape, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
    r"""Draws from :math:`1/(\pi\cosh s)` by inversion: the CDF is :math:`\tfrac2\pi\arctan e^s`, so :math:`s = \log\tan(\pi u/2)`."""
    u = torch.rand(shape, generator=generator, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    return torch.log(torch.tan(math.pi * u / 2)).to(dtype)


class LinearICA(GenerativeModel):
    r"""Independent component analysis as a density model: :math:`x = A s + \mu`, :math:`p(s_i) = 1/(\pi\cosh s_i)`.

    The parameter is the unmixing matrix :math:`W = A^{-1}` (``unmixing``, shape (D, D)); ``mean``
    :math:`\mu` is a buffer set to the data mean by :func:`fit_ica`. ``log_prob`` is exact
    (eq. ch7-eq-ica-loglik), ``sample`` draws independent sources and mixes them, ``loss`` is the
    mean negative log-likelihood.
    """

    log_prob_kind = "exact"

    def __init__(self, dim: int):
        super().__init__()
        self.dim = _positive_int(dim, "dim")
        self.unmixing = nn.Parameter(torch.eye(dim, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))

    @property
    def mixing(self) -> torch.Tensor:
        """:math:`A = W^{-1}`, shape (D, D): its columns are the directions of the sources in data space."""
        return torch.linalg.inv(self.unmixing.detach())

    def unmix(self, x: torch.Tensor) -> torch.Tensor:
        r"""Estimated sources :math:`a = W(x - \mu)`, (n, D) -> (n, D)."""
        _check_points(x, self.dim)
        return (x.to(self.unmixing.dtype) - self.mean) @ self.unmixing.T

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\sum_i\log p(a_i) + \log|\det W|` (eq. ch7-eq-ica-loglik), shape (n,)."""
        return sech_log_prob(self.unmix(x)).sum(dim=-1) + torch.linalg.slogdet(self.unmixing)[1]

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, seed: int | None = None) -> torch.Tensor:
        r""":math:`x = A s + \mu` with independent :math:`s_i \sim 1/(\pi\cosh s)`, shape (n, D), float64."""
        s = sample_sech((_positive_int(n, "n"), self.dim), make_generator(seed=seed, generator=generator),
                        dtype=torch.float64)  # (n, D)
        return s @ self.mixing.T + self.mean

    @torch.no_grad()
    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        r"""Eq. ch7-eq-ica-gradient averaged over ``x``: :math:`W^{-\top} + \frac1n\sum_n\varphi(a_n)(x_n - \mu)^\top`, (D, D)."""
        a = self.unmix(x)  # (n, D)
        centred = x.to(a.dtype) - self.mean  # (n, D)
        return torch.linalg.inv(self.unmixing).T - torch.tanh(a).T @ centred / len(x)

    @torch.no_grad()
    def natural_gradient(self, x: torch.Tensor) -> torch.Tensor:
        r"""Eq. ch7-eq-ica-natural: the gradient times :math:`W^\top W`, :math:`\big(I + \frac1n\sum_n\varphi(a_n)a_n^\top\big)W`, (D, D)."""
        a = self.unmix(x)  # (n, D)
        eye = torch.eye(self.dim, dtype=a.dtype, device=a.device)
        return (eye - torch.tanh(a).T @ a / len(x)) @ self.unmixing


def fit_ica(x: torch.Tensor, steps: int = 500, lr: float = 0.1, natural: bool = True,
            progress: bool | None = None) -> tuple[LinearICA, list[float]]:
    r"""Maximum-likelihood ICA of ``x`` (n, D) by ``steps`` full-batch ascent steps; returns ``(model, losses)``.

    ``mean`` is set to the data mean and :math:`W` starts at the symmetric whitening matrix
    :math:`\hat\Sigma^{-1/2}` (a start, not a constraint: the updates move :math:`W` freely). Each step is
    :math:`W \leftarrow W + \eta\,\Delta`, with :math:`\Delta` the natural gradient (eq.
    ch7-eq-ica-natural; ``natural=True``) or the plain gradient (eq. ch7-eq-ica-gradient). ``losses``
    holds the mean negative log-likelihood before every step. Deterministic: no randomness is used.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] < 1 or len(x) <= x.shape[1]:
        raise ValueError(f"x must be a tensor of shape (n, D) with n > D, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a number > 0, got {lr!r}")
    x = x.double()
    model = LinearICA(x.shape[1])
    with torch.no_grad():
        model.mean.copy_(x.mean(dim=0))
        eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov(x.T).reshape(x.shape[1], x.shape[1]))
        if eigenvalues.min() <= 1e-12 * eigenvalues.max():
            raise ValueError("the data covariance is singular: some mixture is a combination of the others, so W "
                             "cannot be square and invertible; drop the redundant columns first (e.g. with PCA)")
        model.unmixing.copy_(eigenvectors @ torch.diag(eigenvalues.rsqrt()) @ eigenvectors.T)
    losses = []
    for _ in progress_bar(range(_positive_int(steps, "steps")), desc="ICA",
                      disable=None if progress is None else not progress):
        with torch.no_grad():
            losses.append(-model.log_prob(x).mean().item())
            step = model.natural_gradient(x) if natural else model.gradient(x)
            model.unmixing.add_(lr * step)
    return model, losses


def amari_index(unmixing: torch.Tensor, mixing: torch.Tensor) -> float:
    r"""Amari's separation error of :math:`P = WA`, in [0, 1]; 0 iff :math:`P` is a scaled permutation.

    .. math:: \frac{1}{2D(D-1)}\Big[\sum_i\Big(\frac{\sum_j|P_{ij}|}{\max_j|P_{ij}|} - 1\Big)
              + \sum_j\Big(\frac{\sum_i|P_{ij}|}{\max_i|P_{ij}|} - 1\Big)\Big]

    (Amari, Cichocki and Yang, 1996). It ignores what ICA cannot determine: the order and scale of the sources.
    """
    p = torch.as_tensor(unmixing, dtype=torch.float64) @ torch.as_tensor(mixing, dtype=torch.float64)
    if p.dim() != 2 or p.shape[0] != p.shape[1] or p.shape[0] < 2:
        raise ValueError(f"unmixing @ mixing must be a square matrix of size D >= 2, got shape {tuple(p.shape)}")
    p = p.abs()
    d = p.shape[0]
    rows = (p.sum(dim=1) / p.max(dim=1).values - 1).sum()
    columns = (p.sum(dim=0) / p.max(dim=0).values - 1).sum()
    return float((rows + columns) / (2 * d * (d - 1)))
