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
    x = torch.randn(50, 3, generator=make_generator(seed=1))
    oracle = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(3), torch.ones(3)), 1)
    torch.testing.assert_close(model.loss(x), -oracle.log_prob(x).mean())


def test_model_satisfies_the_distribution_protocol():
    model = DiagonalGaussian(2)
    assert isinstance(model, Distribution)
    assert model.sample(7, generator=make_generator(seed=0)).shape == (7, 2)


def test_unknown_log_prob_kind_is_rejected_at_class_creation():
    with pytest.raises(TypeError, match="log_prob_kind must be one of"):

        class Broken(GenerativeModel):  # noqa: F841 - the definition itself must fail
            log_prob_kind = "approximately"


def test_implicit_model_must_define_its_own_loss():
    class Implicit(GenerativeModel):
        log_prob_kind = "none"

    with pytest.raises(NotImplementedError, match="must define its own loss"):
        Implicit().loss(torch.zeros(1, 2))


def test_same_seed_gives_same_numbers_and_generator_is_passed_through():
    a = torch.rand(5, generator=make_generator(seed=42))
    b = torch.rand(5, generator=make_generator(seed=42))
    torch.testing.assert_close(a, b)
    g = torch.Generator()
    assert make_generator(generator=g) is g


def test_make_generator_rejects_ambiguous_or_wrong_arguments():
    with pytest.raises(ValueError, match="either seed= or generator="):
        make_generator(seed=1, generator=torch.Generator())
    with pytest.raises(TypeError, match="seed must be an int"):
        make_generator(seed=1.5)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        make_generator(generator=3)


def test_progress_is_silent_under_nbgrader(monkeypatch, capsys):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    assert list(progress(range(3), desc="x")) == [0, 1, 2]
    assert capsys.readouterr().err == ""


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
