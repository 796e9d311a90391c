"""Check that a built book publishes no instructor material.

``make book`` runs ``python -m gmcourse.bookcheck _build/html`` after Jupyter Book: the
build must contain every page of ``_toc.yml`` and nothing from ``solutions/`` -- no solution
code, no hidden test, no downloadable instructor source.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

# Text that only an instructor version of a notebook contains.
INSTRUCTOR_MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")


def toc_files(toc_path: Path) -> list[str]:
    """Every document named in a Jupyter Book 1 ``_toc.yml`` (root first)."""
    toc = yaml.safe_load(toc_path.read_text())
    found = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                found.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc.get("parts", toc.get("chapters", [])))
    return found


def check_build(html_dir: Path, toc_path: Path = Path("_toc.yml")) -> list[str]:
    """Return a list of problems with the build in ``html_dir`` (empty when all is well)."""
    problems = []
    if not html_dir.is_dir():
        return [f"{html_dir} does not exist: build the book first (make book)"]
    for doc in toc_files(toc_path):
        if not (html_dir / f"{doc}.html").is_file():
            problems.append(f"page {doc}.html is missing from the build")
    for path in sorted(html_dir.rglob("*")):
        relative = path.relative_to(html_dir).as_posix()
        if relative.startswith("solutions/") or "/solutions/" in relative:
            problems.append(f"instructor source published: {relative}")
            continue
        if not path.is_file() or path.suffix not in {".html", ".ipynb", ".md", ".txt", ".js", ".py"}:
            continue
        text = path.read_text(errors="replace")
        for marker in INSTRUCTOR_MARKERS:
            if marker in text:
                problems.append(f"{relative} contains instructor text {marker!r}")
                break
    return problems


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    html_dir = Path(argv[0] if argv else "_build/html")
    problems = check_build(html_dir)
    for problem in problems:
        print(f"bookcheck: {problem}", file=sys.stderr)
    if problems:
        print(f"bookcheck: {len(problems)} problem(s) in {html_dir}", file=sys.stderr)
        return 1
    n_pages = len(list(html_dir.rglob("*.html")))
    print(f"bookcheck: {html_dir} is clean ({n_pages} HTML files, no instructor material)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
