"""The one switch between the book's two sizes, ``GMCOURSE_SCALE`` (gmcourse.utils.scale / at_scale):
it is read from the environment at call time, refuses unknown values, makes every benchmark's
training budget larger at full scale while explicit flags still win, and every chapter that trains
a model reads its budgets through it."""

import re
from pathlib import Path

import pytest

from gmcourse.bench import TASKS
from gmcourse.bench.__main__ import build_parser
from gmcourse.utils import SCALE_VARIABLE, at_scale, scale

BOOK = Path(__file__).resolve().parents[1] / "book"
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]_*.md"))


def test_scale_is_default_when_the_variable_is_unset(monkeypatch):
    monkeypatch.delenv(SCALE_VARIABLE, raising=False)
    assert scale() == "default"
    assert at_scale("small", "large") == "small"


def test_scale_is_full_when_the_variable_says_full(monkeypatch):
    monkeypatch.setenv(SCALE_VARIABLE, "full")
    assert scale() == "full"
    assert at_scale("small", "large") == "large"


def test_scale_is_read_at_every_call_not_at_import(monkeypatch):
    monkeypatch.setenv(SCALE_VARIABLE, "default")
    first = at_scale(1, 2)
    monkeypatch.setenv(SCALE_VARIABLE, "full")
    assert (first, at_scale(1, 2)) == (1, 2)


@pytest.mark.parametrize("bad", ["ful", "FULL", "large", "1"])
def test_unknown_scale_is_refused_with_the_variable_value_and_allowed_values(monkeypatch, bad):
    monkeypatch.setenv(SCALE_VARIABLE, bad)
    with pytest.raises(ValueError) as error:
        scale()
    message = str(error.value)
    assert SCALE_VARIABLE in message and repr(bad) in message and "default" in message and "full" in message
    with pytest.raises(ValueError):
        at_scale(1, 2)


def _cli_seconds(monkeypatch, value, *argv):
    monkeypatch.setenv(SCALE_VARIABLE, value)
    return build_parser().parse_args(list(argv)).seconds


@pytest.mark.parametrize("task", sorted(TASKS))
def test_benchmark_budget_is_larger_at_full_scale(monkeypatch, task):
    default = _cli_seconds(monkeypatch, "default", task)
    full = _cli_seconds(monkeypatch, "full", task)
    assert full > default > 0
    # an explicit --seconds wins at either scale
    assert _cli_seconds(monkeypatch, "full", task, "--seconds", "7") == 7.0
    assert _cli_seconds(monkeypatch, "default", task, "--seconds", "7") == 7.0


def test_benchmark_cli_refuses_to_start_with_a_bad_scale(monkeypatch):
    monkeypatch.setenv(SCALE_VARIABLE, "huge")
    with pytest.raises(ValueError, match=SCALE_VARIABLE):
        build_parser()


# a chapter trains when its code optimises something: an optimizer step, a fit/train call, MCMC sweeps
TRAINS = re.compile(r"\.backward\(|\boptim\.|\bfit\w*\(|\btrain\w*\(|n_sweeps|n_steps")
# chapters that fit something but have no budget to grow: each is solved to convergence
NO_BUDGET = {
    "00_why_generative_models": "scikit-learn's GaussianMixture is fitted to convergence (EM with a tolerance)",
    "01_learning_as_inference": "the lasso is solved by coordinate descent to a tolerance",
}


def _code(chapter: Path) -> str:
    """The code cells of a MyST chapter, joined (prose is left out)."""
    cells = re.findall(r"^```\{code-cell\}[^\n]*\n(.*?)^```", chapter.read_text(), flags=re.S | re.M)
    return "\n".join(cells)


def test_the_chapters_are_found():
    assert len(CHAPTERS) >= 13
    assert set(NO_BUDGET) <= {chapter.stem for chapter in CHAPTERS}, "NO_BUDGET names a chapter that is gone"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda path: path.stem)
def test_every_chapter_that_trains_reads_its_budget_through_the_switch(chapter):
    code = _code(chapter)
    if not TRAINS.search(code):
        pytest.skip(f"{chapter.name} trains nothing")
    if chapter.stem in NO_BUDGET:
        pytest.skip(f"{chapter.name}: {NO_BUDGET[chapter.stem]}")
    assert "at_scale(" in code, (f"{chapter.name} trains a model but never calls gmcourse.utils.at_scale: its "
                                 f"budgets do not grow with GMCOURSE_SCALE=full")
    assert "os.environ" not in code and "cuda.is_available" not in code, (
        f"{chapter.name} reads a second switch; budgets come from at_scale, the device from default_device()")
