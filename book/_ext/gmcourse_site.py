"""Sphinx extension: the built book loads nothing from the network, and no page logs an error.

1. **MathJax from the site itself.** Jupyter Book 1 (through ``sphinx.ext.mathjax``) loads
   MathJax from a CDN by default. This extension points ``mathjax_path`` at a copy of MathJax 3
   taken from the pinned ``django-static-mathjax`` package and copies it into
   ``_static/mathjax/`` of the HTML build, so that formulas are typeset with no network at all
   (a laptop on a train, an exam room, a firewalled campus). Copied: ``tex-chtml.js`` (TeX
   input, CommonHTML output, menu and assistive MathML in one file) and the folders it loads
   from at run time -- ``input/`` (TeX extensions that ``autoload`` fetches on first use, e.g.
   ``\\require``, ``\\cancel``), ``output/`` (the CHTML web fonts, and the SVG renderer the
   menu can switch to), ``ui/`` (the context menu), ``a11y/`` and ``sre/`` (the accessibility
   explorer and speech, loaded when a reader turns them on in the menu); not the package's
   other combined components (``tex-svg.js``, ``mml-chtml.js``, ...).
2. **A favicon** (``favicon.svg`` here), unless ``html_favicon`` is set: without one every
   browser asks the server for ``/favicon.ico`` and gets a 404. The site's ``index.html``
   (a redirect to the first page) is written as a small HTML page that names it too.
3. **Each inline script once.** sphinx-thebe and sphinx-togglebutton register their inline
   configuration scripts twice under Jupyter Book 1, and the second ``const THEBE_JS_URL = ...``
   is a ``SyntaxError`` on every page; identical script entries are dropped from each page.
4. **The theme's colour mode is "auto" unless configured** (``html_context["default_mode"]``):
   with none, pydata-sphinx-theme logs "Got invalid theme mode" as a console error on a reader's first
   visit (it then falls back to "auto" anyway).

``tests/test_site.py`` checks the result in a browser. Registered in ``_config.yml`` under
``sphinx: local_extensions:``.
"""

from __future__ import annotations

import filecmp
import shutil
from html import escape as html_escape
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

#: Where the copy goes, relative to ``_static`` of the HTML build.
STATIC_SUBDIR = "mathjax"
#: The combined component the pages load.
ENTRY = "tex-chtml.js"
#: What ``tex-chtml.js`` may load at run time (see the module docstring).
RUNTIME_ITEMS = (ENTRY, "input", "output", "ui", "a11y", "sre")
FAVICON = Path(__file__).parent / "favicon.svg"


def mathjax_source() -> Path:
    """The ``es5`` folder of the MathJax 3 distribution inside ``django-static-mathjax``."""
    try:
        import mathjax  # django-static-mathjax
    except ImportError as exc:  # pragma: no cover - requirements.txt pins it
        raise RuntimeError(
            "gmcourse_site: the package django-static-mathjax (module `mathjax`) is not "
            "installed; it is pinned in requirements.txt"
        ) from exc
    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (es5 / ENTRY).is_file():
        raise RuntimeError(f"gmcourse_site: {es5 / ENTRY} is missing; reinstall django-static-mathjax")
    return es5


def _set_mathjax_path(app: Sphinx, config) -> None:
    # Relative paths in mathjax_path are resolved against _static/ by Sphinx.
    config.mathjax_path = f"{STATIC_SUBDIR}/{ENTRY}"
    # What the pages ask of MathJax, spelled out (these are MathJax 3's defaults; Sphinx
    # writes every formula as \(...\) or \[...\], and myst-nb restricts processing to the
    # classes in options.processHtmlClass).
    mj = dict(config.mathjax3_config or {})
    tex = dict(mj.get("tex", {}))
    tex.setdefault("inlineMath", [["\\(", "\\)"]])
    tex.setdefault("displayMath", [["\\[", "\\]"]])
    tex.setdefault("processEscapes", True)
    mj["tex"] = tex
    config.mathjax3_config = mj


def _copy_tree(src: Path, dst: Path) -> int:
    """Copy ``src`` into ``dst``, skipping files that are already identical; return how many were copied."""
    copied = 0
    if src.is_file():
        if not dst.is_file() or not filecmp.cmp(src, dst, shallow=True):
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
            copied += 1
        return copied
    for path in sorted(src.rglob("*")):
        if path.is_file():
            copied += _copy_tree(path, dst / path.relative_to(src))
    return copied


def _copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    es5 = mathjax_source()
    target = Path(app.outdir) / "_static" / STATIC_SUBDIR
    copied = sum(_copy_tree(es5 / item, target / item) for item in RUNTIME_ITEMS)
    logger.info(f"gmcourse_site: MathJax {ENTRY} and its run-time files in _static/{STATIC_SUBDIR} ({copied} copied)")


def _set_defaults(app: Sphinx, config) -> None:
    if not config.html_favicon:
        config.html_favicon = str(FAVICON)
    # pydata-sphinx-theme reads its colour mode from the template context, not a theme option
    context = dict(config.html_context or {})
    context.setdefault("default_mode", "auto")
    config.html_context = context


def _drop_duplicate_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, unique = set(), []
    for script in scripts:
        # an inline script has filename None or "" depending on when it was added
        key = (str(getattr(script, "filename", script) or ""),
               tuple(sorted((k, str(v)) for k, v in getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    if len(unique) != len(scripts):
        # a new list: the builder restores its own list for the next page
        context["script_files"] = unique


_REDIRECT = """<!DOCTYPE html>
<html lang="{language}">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="icon" href="_static/{favicon}">
<meta http-equiv="Refresh" content="0; url={target}">
</head>
<body><p><a href="{target}">{title}</a></p></body>
</html>
"""


def _write_index_redirect(app: Sphinx, exception: Exception | None) -> None:
    """``index.html`` as a small page that sends the reader to the book's first page.

    sphinx-external-toc writes a bare ``<meta http-equiv="Refresh">`` line there (only when
    the file is missing); a page with a title, the favicon and a link is kinder to browsers
    (no request for ``/favicon.ico``), to screen readers and to anyone with redirects off.
    Runs before sphinx-external-toc's handler, which then leaves the file alone.
    """
    if exception is not None or app.builder.name != "html" or "index" in app.env.all_docs:
        return
    root = app.config.root_doc
    favicon = Path(app.config.html_favicon or "").name
    html = _REDIRECT.format(
        language=app.config.language or "en",
        title=html_escape(app.config.html_title or app.config.project),
        favicon=html_escape(favicon),
        target=html_escape(f"{root}.html"),
    )
    index = Path(app.outdir) / "index.html"
    if not index.is_file() or index.read_text(encoding="utf8") != html:
        index.write_text(html, encoding="utf8")


def _colab_only_for_notebook_files(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Colab opens ``.ipynb`` files only: a chapter written as MyST markdown keeps its Binder and
    JupyterHub buttons (JupyterLab opens it as a notebook through jupytext) but not a Colab link
    that would fail. The assignments are ``.ipynb`` files and keep all three."""
    if context.get("page_source_suffix") == ".ipynb":
        return
    for button in context.get("header_buttons", []):
        if button.get("label") == "launch-buttons":
            button["buttons"] = [b for b in button["buttons"] if b.get("text") != "Colab"]


def setup(app: Sphinx) -> dict:
    app.setup_extension("sphinx.ext.mathjax")
    # priority > 500: after the defaults and after myst_parser's mathjax settings
    app.connect("config-inited", _set_mathjax_path, priority=900)
    app.connect("config-inited", _set_defaults, priority=900)
    # last, after every extension has added its scripts for the page
    app.connect("html-page-context", _drop_duplicate_scripts, priority=999)
    # after sphinx-book-theme has added the launch buttons (default priority)
    app.connect("html-page-context", _colab_only_for_notebook_files, priority=600)
    app.connect("build-finished", _copy_mathjax)
    app.connect("build-finished", _write_index_redirect, priority=400)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
