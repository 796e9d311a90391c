"""How long each chapter took to execute in a book build: ``python -m gmcourse.timings BUILD_DIR``.

`jupyter-book build` keeps every executed chapter in its execution cache
(``BUILD_DIR/.jupyter_cache``) together with the seconds the execution took. This module reads that
cache and writes a per-chapter table, ``timings.md`` (for a person) and ``timings.csv`` (for a
script), next to it, and prints the table. ``make timings`` runs it on the build that ``make book``
made at the current ``GMCOURSE_SCALE``.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from .bookcheck import toc_files
from .utils import default_device


def chapter_seconds(build_dir: Path, root: Path) -> dict[str, float]:
    """Seconds of the latest cached execution of each chapter in the table of contents."""
    from jupyter_cache import get_cache

    cache_dir = build_dir / ".jupyter_cache"
    if not cache_dir.is_dir():
        raise FileNotFoundError(f"no execution cache at {cache_dir}: build the book first (make book)")
    latest: dict[str, tuple] = {}
    for record in get_cache(str(cache_dir)).list_cache_records():
        key = str(Path(record.uri).resolve())
        if key not in latest or record.created > latest[key][0]:
            latest[key] = (record.created, record.data.get("execution_seconds"))
    seconds = {}
    for doc in toc_files(root / "_toc.yml"):
        for suffix in (".md", ".ipynb"):
            found = latest.get(str((root / f"{doc}{suffix}").resolve()))
            if found is not None and found[1] is not None:
                seconds[doc] = float(found[1])
    return seconds


def write_tables(build_dir: Path, root: Path = Path(".")) -> str:
    import os

    seconds = chapter_seconds(build_dir, root)
    if not seconds:
        raise ValueError(f"the execution cache in {build_dir} holds no chapter of {root / '_toc.yml'}")
    device = default_device()
    where = f"GMCOURSE_SCALE={os.environ.get('GMCOURSE_SCALE') or 'default'}, device {device.type}"
    lines = [f"Execution time per chapter ({where})", "", "| chapter | seconds |", "|---|---:|"]
    lines += [f"| {doc} | {s:.1f} |" for doc, s in seconds.items()]
    lines.append(f"| **total** | {sum(seconds.values()):.1f} |")
    table = "\n".join(lines) + "\n"
    (build_dir / "timings.md").write_text(table)
    with open(build_dir / "timings.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["chapter", "seconds", "scale", "device"])
        for doc, s in seconds.items():
            writer.writerow([doc, f"{s:.2f}", os.environ.get("GMCOURSE_SCALE") or "default", device.type])
    return table


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m gmcourse.timings BUILD_DIR   (the folder that holds .jupyter_cache, e.g. _build)", file=sys.stderr)
        return 2
    try:
        print(write_tables(Path(argv[0])), end="")
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
