"""Small helpers shared by every chapter: devices, random generators, progress bars, and the
one switch between the book's two sizes (:func:`scale`, :func:`at_scale`).

Every random function in gmcourse takes ``generator=`` (a :class:`torch.Generator`) or
``seed=`` (an int), so that a notebook, a test and a benchmark can all be made
reproducible without touching global state.
"""

from __future__ import annotations

import os
import sys

# torch is imported inside the functions that use it: the grader imports this module for
# write_text_atomic and progress, and each of its processes would otherwise load torch for nothing.

__all__ = ["SCALES", "SCALE_VARIABLE", "at_scale", "check_points", "default_device", "make_generator", "positive_int",
           "progress", "running_under_nbgrader", "scale"]

SCALE_VARIABLE = "GMCOURSE_SCALE"
SCALES = ("default", "full")


def scale() -> str:
    """``"default"`` or ``"full"``: how large the chapters and benchmarks train, from the environment
    variable ``GMCOURSE_SCALE`` (unset or empty means ``"default"``).

    Why a switch: the book is built and tested on two CPU cores, so every chapter trains for a budget
    that finishes in minutes there, and the benchmarks' default budget is a minute. On a GPU runner
    the same code can afford 5-20x the steps and larger Monte Carlo samples;
    ``GMCOURSE_SCALE=full`` asks for that. The code paths are the same at both sizes, only the
    budgets differ (:func:`at_scale`). The variable is read at every call, not at import, so a test
    or a notebook can change it with ``os.environ`` / ``monkeypatch.setenv``. A value other than
    ``default`` or ``full`` is an error rather than a silent default, so a typo such as
    ``GMCOURSE_SCALE=ful`` does not quietly build the small book.
    """
    value = os.environ.get(SCALE_VARIABLE, "").strip()
    if value == "":
        return "default"
    if value not in SCALES:
        raise ValueError(f"{SCALE_VARIABLE}={value!r} is not a known scale; allowed values: "
                         f"{', '.join(SCALES)} (unset means default)")
    return value


def at_scale(default, full):
    """``default`` at the default scale, ``full`` when ``GMCOURSE_SCALE=full`` (see :func:`scale`).

    Every training budget of the book and the benchmarks is written as one call, e.g.
    ``epochs = at_scale(60, 600)``, so that the default size stays exactly what it was and the
    full size sits next to it where a reader can see both.
    """
    return full if scale() == "full" else default


def default_device() -> torch.device:
    """``cuda`` when a GPU is available, else ``cpu``: the same notebook runs on both."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_generator(
    seed: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Generator:
    """Return a :class:`torch.Generator` from either a ``seed`` or an existing ``generator``.

    * ``generator`` given: it is returned unchanged (its state is the caller's business).
    * ``seed`` given: a new generator seeded with it.
    * neither: a new generator seeded from torch's global RNG, so ``torch.manual_seed``
      still makes the call reproducible.

    Giving both is an error, because it is ambiguous which one should win.
    """
    import torch

    if generator is not None and seed is not None:
        raise ValueError("pass either seed= or generator=, not both")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return generator
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    elif not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    g = torch.Generator(device=device if device is not None else "cpu")
    g.manual_seed(seed)
    return g


def running_under_nbgrader() -> bool:
    """True while nbgrader validates or autogrades a notebook (it sets NBGRADER_EXECUTION)."""
    return bool(os.environ.get("NBGRADER_EXECUTION"))


def progress(iterable=None, *, total=None, desc=None, disable=None, **kwargs):
    """A tqdm progress bar written to stderr (plain text, so it renders in a built book too).

    ``disable=None`` hides the bar under nbgrader (a test cell that writes to stderr
    would be scored as failed) and keeps it everywhere else.
    """
    from tqdm.std import tqdm

    if disable is None:
        disable = running_under_nbgrader()
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        disable=disable,
        file=sys.stderr,
        mininterval=kwargs.pop("mininterval", 0.5),
        dynamic_ncols=True,
        **kwargs,
    )


def check_points(x, dim: int, what: str = "x", hint_if_3d: str = "") -> torch.Tensor:
    """``x`` must be a floating-point tensor of shape ``(n, dim)``; otherwise an error that says what
    was expected (plus ``hint_if_3d`` when a batch of images arrives unflattened)."""
    import torch

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor of shape (n, {dim}), got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != dim:
        raise ValueError(f"{what} must have shape (n, {dim}), got {tuple(x.shape)}"
                         + (f" ({hint_if_3d})" if hint_if_3d and x.dim() == 3 else ""))
    if not x.is_floating_point():
        raise TypeError(f"{what} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def positive_int(value, name: str, minimum: int = 1) -> int:
    """``value`` must be an int (not a bool) of at least ``minimum``; otherwise a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def write_text_atomic(path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename: a reader,
    or a crash at any moment, sees either the old file or the whole new one, never half of it."""
    import os
    import tempfile
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as file:
            file.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
