"""The shared pieces: the model protocol, generators and the book's publication check."""

from __future__ import annotations

import math

import pytest
import torch

from gmcourse.bookcheck import check_build, toc_files
from gmcourse.protocol import Distribution, GenerativeModel
from gmcourse.utils import make_generator, progress


class DiagonalGaussian(GenerativeModel):
    """The smallest exact-likelihood model: N(mu, diag(sigma^2)) with learnable parameters."""

    def __init__(self, dim: int):
        super().__init__()
        self.mu = torch.nn.Parameter(torch.zeros(dim))
        self.log_sigma = torch.nn.Parameter(torch.zeros(dim))

    def log_prob(self, x):
        z = (x - self.mu) / self.log_sigma.exp()
        return (-0.5 * z**2 - self.log_sigma - 0.5 * math.log(2 * math.pi)).sum(-1)

    def sample(self, n, generator=None):
        eps = torch.randn(n, self.mu.numel(), generator=make_generator(generator=generator))
        return self.mu + self.log_sigma.exp() * eps


def test_default_loss_is_mean_negative_log_likelihood():
    model = DiagonalGaussian(3)
    with torch.no_grad():  # parameters away from N(0, I), so a loss that ignored them would fail
        model.mu.copy_(torch.tensor([0.5, -1.0, 2.0]))
        model.log_sigma.copy_(torch.tensor([0.0, 0.7, -0.3]))
    x = torch.randn(50, 3, generator=make_generator(seed=1))
    oracle = torch.distributions.Independent(
        torch.distributions.Normal(model.mu.detach(), model.log_sigma.detach().exp()), 1
    )
    torch.testing.assert_close(model.loss(x), -oracle.log_prob(x).mean())


def test_model_satisfies_the_distribution_protocol_and_a_sampler_alone_does_not():
    model = DiagonalGaussian(2)
    assert isinstance(model, Distribution)
    assert model.sample(7, generator=make_generator(seed=0)).shape == (7, 2)

    class SamplerOnly:
        log_prob_kind = "none"

        def sample(self, n, generator=None):
            return torch.zeros(n, 2)

    assert not isinstance(SamplerOnly(), Distribution)


def test_unknown_log_prob_kind_is_rejected_at_class_creation():
    with pytest.raises(TypeError, match="log_prob_kind must be one of"):

        class Broken(GenerativeModel):  # noqa: F841 - the definition itself must fail
            log_prob_kind = "approximately"


def test_implicit_model_must_define_its_own_loss():
    class Implicit(GenerativeModel):
        log_prob_kind = "none"

    with pytest.raises(NotImplementedError, match="must define its own loss"):
        Implicit().loss(torch.zeros(1, 2))


def test_seed_determines_the_numbers_and_generator_is_passed_through():
    a = torch.rand(5, generator=make_generator(seed=42))
    b = torch.rand(5, generator=make_generator(seed=42))
    c = torch.rand(5, generator=make_generator(seed=43))
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)  # a generator that ignored its seed would give a == c
    torch.testing.assert_close(a, torch.rand(5, generator=torch.Generator().manual_seed(42)))
    g = torch.Generator()
    assert make_generator(generator=g) is g


def test_without_seed_the_generator_follows_the_global_seed():
    torch.manual_seed(7)
    a = torch.rand(5, generator=make_generator())
    torch.manual_seed(7)
    b = torch.rand(5, generator=make_generator())
    torch.manual_seed(8)
    c = torch.rand(5, generator=make_generator())
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_make_generator_honours_the_device():
    g = make_generator(seed=3, device="cuda")
    assert g.device.type == "cuda"
    x = torch.rand(4, generator=g, device="cuda")
    torch.testing.assert_close(x, torch.rand(4, generator=make_generator(seed=3, device="cuda"), device="cuda"))


def test_make_generator_rejects_ambiguous_or_wrong_arguments():
    with pytest.raises(ValueError, match="either seed= or generator="):
        make_generator(seed=1, generator=torch.Generator())
    with pytest.raises(TypeError, match="seed must be an int"):
        make_generator(seed=1.5)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        make_generator(generator=3)


def test_progress_is_silent_under_nbgrader_and_visible_otherwise(monkeypatch, capsys):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    assert list(progress(range(3), desc="counting")) == [0, 1, 2]
    assert "counting" in capsys.readouterr().err  # the bar is drawn on stderr ...
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    assert list(progress(range(3), desc="counting")) == [0, 1, 2]
    assert capsys.readouterr().err == ""  # ... and not under nbgrader


def test_bookcheck_flags_published_solutions(tmp_path):
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: ch1\n")
    html = tmp_path / "html"
    (html / "solutions").mkdir(parents=True)
    (html / "intro.html").write_text("<p>welcome</p>")
    (html / "ch1.html").write_text("<pre>### BEGIN SOLUTION\nx = 1</pre>")
    (html / "solutions" / "A1.ipynb").write_text("{}")
    problems = check_build(html, tmp_path / "_toc.yml")
    assert any("ch1.html contains instructor text" in p for p in problems)
    assert any("instructor source published: solutions/A1.ipynb" in p for p in problems)
    (html / "ch1.html").write_text("<p>clean</p>")
    (html / "solutions" / "A1.ipynb").unlink()
    (html / "solutions").rmdir()
    assert check_build(html, tmp_path / "_toc.yml") == []
    assert toc_files(tmp_path / "_toc.yml") == ["intro", "ch1"]
