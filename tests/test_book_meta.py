"""Checks of the book's sources that need no execution: bibliography, citations, wording,
exercise solutions and the equation labels that library docstrings cite.

Every check is parametrised per file, so that one chapter can be checked on its own, e.g.
``pytest tests/test_book_meta.py -k 02_maximum``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pybtex.errors
import pytest
import yaml
from pybtex.database import parse_file

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
BIB_DIR = BOOK / "bib"
SOLUTIONS = ROOT / "solutions" / "pen_and_paper"

# Phrases about how the book was made, which a reader must never meet (matched case-insensitively).
FORBIDDEN_PHRASES = (
    "the lecture",
    "the lectures",
    "source lecture",
    "the issue",
    "issue #",
    "the target is",
    "machine load",
    "load about",
)

CHAPTERS = sorted(BOOK.glob("*.md"))
BIB_FILES = sorted(BIB_DIR.glob("*.bib"))
MODULES = sorted((ROOT / "gmcourse").glob("*.py"))

# An entry starts with @type{key, ; @comment, @string and @preamble define no key.
BIB_ENTRY = re.compile(r"^\s*@\s*(\w+)\s*[{(]\s*([^,\s]+)\s*,", re.MULTILINE)
# {cite}`a`, {cite:t}`a,b`, {cite:p}`a, b`, {cite:ps}`a` ...
CITE_ROLE = re.compile(r"\{cite(?::\w+)?\}`([^`]*)`")
# MyST labels: (name)= targets, :label: name in {math}, and $$ ... $$ (name) after display math.
LABEL_TARGET = re.compile(r"^\(([\w-]+)\)=\s*$", re.MULTILINE)
LABEL_OPTION = re.compile(r"^:label:\s*([\w-]+)\s*$", re.MULTILINE)
LABEL_DOLLARMATH = re.compile(r"^\$\$\s*\(([\w-]+)\)\s*$", re.MULTILINE)
# How docstrings cite a chapter's label: "eq. ch2-eq-nll", "section ch0-taxonomy".
CITED_LABEL = re.compile(r"\b(ch\d+-[a-z0-9]+(?:-[a-z0-9]+)*)\b")


def ids(paths):
    return [p.stem for p in paths]


def bib_keys(path: Path) -> list[str]:
    return [key for kind, key in BIB_ENTRY.findall(path.read_text()) if kind.lower() not in ("comment", "string", "preamble")]


def all_bib_keys() -> set[str]:
    return {key for path in BIB_FILES for key in bib_keys(path)}


def labels_in_book() -> set[str]:
    labels = set()
    for path in CHAPTERS:
        text = path.read_text()
        for pattern in (LABEL_TARGET, LABEL_OPTION, LABEL_DOLLARMATH):
            labels.update(pattern.findall(text))
    return labels


def exercise_count(text: str) -> int:
    """Number of items of the numbered list under '## Exercises' (0 if there is none)."""
    match = re.search(r"^## Exercises\s*$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    if not match:
        return 0
    return len(re.findall(r"^\d+\.\s", match.group(1), re.MULTILINE))


def solution_numbers(text: str) -> set[int]:
    """Numbers of the solutions in a solutions file: '## Exercise 3' headings or '3.' list items."""
    numbers = {int(n) for n in re.findall(r"^#{1,6}\s+(?:Exercise\s+)?(\d+)\b", text, re.MULTILINE)}
    numbers |= {int(n) for n in re.findall(r"^(\d+)\.\s", text, re.MULTILINE)}
    return numbers


# ----------------------------------------------------------------------------- bibliography

def test_every_bib_file_is_registered_and_every_registered_file_exists():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    registered = config.get("bibtex_bibfiles") or []
    on_disk = {p.relative_to(ROOT).as_posix() for p in BIB_FILES}
    assert BIB_FILES, "book/bib/ holds no .bib file"
    missing = sorted(f for f in registered if not (ROOT / f).is_file())
    unregistered = sorted(on_disk - set(registered))
    assert not missing, f"_config.yml bibtex_bibfiles lists files that do not exist: {missing}"
    assert not unregistered, f"bib files not listed in _config.yml bibtex_bibfiles: {unregistered}"


def test_no_bibtex_key_is_defined_twice():
    where: dict[str, list[str]] = {}
    for path in BIB_FILES:
        for key in bib_keys(path):
            where.setdefault(key.lower(), []).append(path.name)
    duplicates = {key: files for key, files in where.items() if len(files) > 1}
    assert not duplicates, f"bibtex keys defined more than once: {duplicates}"


@pytest.mark.parametrize("path", BIB_FILES, ids=ids(BIB_FILES))
def test_bib_file_parses_strictly(path):
    pybtex.errors.set_strict_mode(True)
    data = parse_file(str(path))
    assert set(data.entries) == set(bib_keys(path)), "the entry regex and pybtex disagree on the keys"


@pytest.mark.parametrize("path", CHAPTERS, ids=ids(CHAPTERS))
def test_every_cited_key_exists(path):
    known = all_bib_keys()
    cited = {key.strip() for keys in CITE_ROLE.findall(path.read_text()) for key in keys.split(",")}
    unknown = sorted(key for key in cited if key and key not in known)
    assert not unknown, f"{path.name} cites keys that are in no book/bib/*.bib file: {unknown}"


# ----------------------------------------------------------------------------- wording

@pytest.mark.parametrize("path", CHAPTERS, ids=ids(CHAPTERS))
def test_chapter_does_not_talk_about_how_the_book_was_made(path):
    lines = path.read_text().splitlines()
    hits = [
        f"line {number}: {phrase!r} in {line.strip()[:100]!r}"
        for number, line in enumerate(lines, start=1)
        for phrase in FORBIDDEN_PHRASES
        if phrase in line.lower()
    ]
    assert not hits, f"{path.name} speaks about its own making:\n" + "\n".join(hits)


# ----------------------------------------------------------------------------- exercises

@pytest.mark.parametrize("path", CHAPTERS, ids=ids(CHAPTERS))
def test_every_exercise_has_a_pen_and_paper_solution(path):
    n_exercises = exercise_count(path.read_text())
    if n_exercises == 0:
        pytest.skip(f"{path.name} has no exercise list")
    number = re.match(r"(\d+)_", path.name)
    assert number, f"{path.name} has exercises but no chapter number in its file name"
    solutions = SOLUTIONS / f"ch{int(number.group(1)):02d}.md"
    assert solutions.is_file(), f"{path.name} has {n_exercises} exercises but {solutions.relative_to(ROOT)} is missing"
    missing = sorted(set(range(1, n_exercises + 1)) - solution_numbers(solutions.read_text()))
    assert not missing, f"{solutions.relative_to(ROOT)} has no solution to exercises {missing} of {path.name}"


def test_exercise_and_solution_counting_sees_numbered_items():
    text = "## Summary\n\n1. not an exercise\n\n## Exercises\n\n1. **A.** x\n   more\n2. **B.** y\n\n## Next\n3. z\n"
    assert exercise_count(text) == 2
    assert solution_numbers("# Chapter\n\n## Exercise 1\n\ntext\n\n2. answer\n") == {1, 2}


# ----------------------------------------------------------------------------- labels

@pytest.mark.parametrize("path", MODULES, ids=ids(MODULES))
def test_labels_cited_by_library_docstrings_exist_in_the_book(path):
    cited = set(CITED_LABEL.findall(path.read_text()))
    missing = sorted(cited - labels_in_book())
    assert not missing, f"{path.name} cites labels that no chapter defines: {missing}"
