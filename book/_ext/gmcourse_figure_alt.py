"""Sphinx extension: every figure a chapter draws gets an alt text.

myst-nb writes a notebook's image output as ``<img>`` with no ``alt`` unless the cell asks for
one (cell metadata ``mystnb: image: alt: ...``); docutils then falls back to the image's file
name, which tells a screen-reader user nothing. For every image output that has no alt text
of its own, this extension writes one from what the book itself says about the figure:

1. the first sentence of the figure's caption, when the cell has one
   (``mystnb: figure: caption: ...``);
2. what the cell's code writes on the figure: its ``suptitle``, and for each panel its title
   and axis labels (string literals read from the code with :mod:`ast`; the parts of an
   f-string computed at run time are shown as "…");
3. how many axes the figure has, from the figure's own text output
   (``<Figure size 1000x330 with 2 Axes>``, recorded when the chapter was executed).

For example ``Figure with 3 axes. Panels: "burn-in, L = 16 at T_c" (x: Metropolis sweep; y:
|m|); "autocorrelation, L = 16 at T_c" (x: lag (sweeps); y: rho(t) of |m|); ...``. TeX in
titles is turned into words a screen reader can say ($\\mathcal{N}(0, 1)$ -> N(0, 1)).

An alt text written in the cell's metadata always wins; a figure whose code has no title and
no label gets a plain "Figure drawn by the code cell above (no title or axis labels)" and is
listed with ``sphinx-build -v`` so that its author can write ``mystnb: image: alt:``.
"""

from __future__ import annotations

import ast
import re

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

MAX_CHARS = 500

_TITLE = {"set_title": "title", "title": "title"}
_XLABEL = {"set_xlabel": "x", "xlabel": "x"}
_YLABEL = {"set_ylabel": "y", "ylabel": "y"}
_FIGURE_LEVEL = {"suptitle": "suptitle", "supxlabel": "x", "supylabel": "y"}
_SET_KEYWORDS = {"title": "title", "xlabel": "x", "ylabel": "y"}

# TeX -> words. Only what a label in this book may contain; anything else loses its backslash.
_TEX_WORDS = {
    "mid": "|", "to": "->", "times": "x", "cdot": "*", "le": "<=", "leq": "<=", "ge": ">=",
    "geq": ">=", "approx": "~", "sim": "~", "infty": "infinity", "ell": "l", "partial": "d",
    "nabla": "grad", "pm": "+/-", "propto": "proportional to", "in": "in", "ldots": "...",
    "dots": "...", "cdots": "...", "quad": " ", "qquad": " ", "langle": "<", "rangle": ">",
    "leftarrow": "<-", "rightarrow": "->", "gets": "<-", "sqrt": "square root of ",
    "bar": "bar ", "hat": "hat ", "tilde": "tilde ", "vert": "|", "lVert": "||", "rVert": "||",
}
_TEX_WRAPPERS = r"mathcal|mathrm|mathbf|mathbb|boldsymbol|text|textrm|textbf|textit|operatorname|mathit"


def tex_to_words(text: str) -> str:
    """Readable text from a label with inline TeX: ``$\\rho(t)$ of $|m|$`` -> ``rho(t) of |m|``."""
    text = text.replace("\\\\", " ").replace("\n", ", ")
    for _ in range(3):  # nested wrappers: \hat{\mathbf{x}}
        text = re.sub(rf"\\(?:{_TEX_WRAPPERS})\s*\{{([^{{}}]*)\}}", r"\1", text)
    text = re.sub(r"\\frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"(\1)/(\2)", text)
    text = re.sub(r"\\(left|right|big|Big|bigg|Bigg)\b\s*", "", text)
    text = re.sub(r"\\[,;:! ]", " ", text)
    text = re.sub(r"(?<=[A-Za-z0-9}])\\(?=[A-Za-z])", r" \\", text)  # x\sigma -> x \sigma
    text = re.sub(
        r"\\([A-Za-z]+)(?=(\\|[A-Za-z])?)",
        lambda m: _TEX_WORDS.get(m.group(1), m.group(1)) + (" " if m.group(2) else ""),
        text,
    )
    text = text.replace("$", "").replace("{", "").replace("}", "").replace("\\", "")
    return re.sub(r"\s+", " ", text).strip(" ,")


def _string_of(node: ast.AST) -> str | None:
    """The text of a string literal or f-string (run-time parts as "…"); None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                parts.append(value.value)
            else:
                parts.append("…")
        text = "".join(parts)
        return text if text.replace("…", "").strip(" ,:;=\n$") else None
    return None


def _parse(source: str) -> ast.Module | None:
    # IPython magics and shell escapes are not Python
    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


def describe_code(source: str) -> tuple[str | None, list[dict[str, str]]]:
    """(suptitle, panels) that the plotting code in ``source`` writes; each panel a dict with
    some of ``title``, ``x``, ``y``."""
    tree = _parse(source)
    if tree is None:
        return None, []
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
    calls.sort(key=lambda n: (n.lineno, n.col_offset))
    suptitle = None
    figure_labels: dict[str, str] = {}
    panels: list[dict[str, str]] = []
    current: dict[str, dict[str, str]] = {}  # receiver -> its latest panel

    def record(receiver: str, field: str, text: str) -> None:
        panel = current.get(receiver)
        if panel is None or field in panel:  # a new panel (or the same name reused in a loop)
            panel = {}
            panels.append(panel)
            current[receiver] = panel
        panel[field] = text

    for call in calls:
        name = call.func.attr
        receiver = ast.unparse(call.func.value)
        first = call.args[0] if call.args else None
        if name in _FIGURE_LEVEL and first is not None:
            text = _string_of(first)
            if text:
                if name == "suptitle":
                    suptitle = text
                else:
                    figure_labels[_FIGURE_LEVEL[name]] = text
            continue
        field = _TITLE.get(name) or _XLABEL.get(name) or _YLABEL.get(name)
        if field is not None:
            arg = first
            if arg is None:
                arg = next((k.value for k in call.keywords if k.arg in ("label", "xlabel", "ylabel")), None)
            text = _string_of(arg) if arg is not None else None
            if text:
                record(receiver, field, text)
            continue
        if name == "set":
            for keyword in call.keywords:
                if keyword.arg in _SET_KEYWORDS:
                    text = _string_of(keyword.value)
                    if text:
                        record(receiver, _SET_KEYWORDS[keyword.arg], text)
    for field, text in figure_labels.items():
        for panel in panels or [{}]:
            panel.setdefault(field, text)
        if not panels:
            panels.append({field: text})
    return suptitle, [p for p in panels if p]


def describe_figure(caption: str | None, source: str | None, figure_repr: str | None) -> str:
    """The alt text of one figure (see the module docstring)."""
    sentences = []
    if caption:
        caption = tex_to_words(" ".join(caption.split()))
        first = re.split(r"(?<=[.!?])\s+(?=[A-Z(])", caption, maxsplit=1)[0]
        sentences.append(first if first.endswith((".", "!", "?")) else first + ".")
    n_axes = None
    if figure_repr:
        match = re.search(r"with (\d+) Axes", figure_repr)
        if match:
            n_axes = int(match.group(1))
    suptitle, panels = describe_code(source or "")
    head = "Figure" if n_axes is None else f"Figure with {n_axes} ax{'is' if n_axes == 1 else 'es'}"
    if suptitle:
        head += f' titled "{tex_to_words(suptitle)}"'
    described = []
    for panel in panels:
        words = []
        if "title" in panel:
            words.append(f'"{tex_to_words(panel["title"])}"')
        axes = "; ".join(f"{k}: {tex_to_words(panel[k])}" for k in ("x", "y") if k in panel)
        if axes:
            words.append(f"({axes})" if words else axes)
        described.append(" ".join(words))
    if described:
        label = "Panels" if len(described) > 1 else "Panel"
        sentences.append(f"{head}. {label}: " + "; ".join(described) + ".")
    elif suptitle or not caption:
        sentences.append(head + (". " if suptitle else " ") + "drawn by the code cell above (no title or axis labels)."
                         if not suptitle else head + ".")
    text = " ".join(sentences)
    if len(text) > MAX_CHARS:
        text = text[: MAX_CHARS - 1].rsplit(" ", 1)[0] + " …"
    return text


def _ancestor(node: nodes.Node, condition) -> nodes.Element | None:
    node = node.parent
    while node is not None:
        if condition(node):
            return node
        node = node.parent
    return None


def _cell_source(cell: nodes.Element) -> str | None:
    for child in cell.children:
        if isinstance(child, nodes.Element) and child.get("nb_element") == "cell_code_source":
            return child.astext()
    return None


def add_alt_texts(app: Sphinx, doctree: nodes.document) -> None:
    docname = app.env.docname
    for image in list(doctree.findall(nodes.image)):
        if image.get("alt"):
            continue
        bundle = _ancestor(image, lambda n: isinstance(n, nodes.Element) and n.get("nb_element") == "mime_bundle")
        if bundle is None:
            continue  # not a notebook output: a Markdown image carries its own alt text
        cell = _ancestor(bundle, lambda n: isinstance(n, nodes.Element) and n.get("nb_element") == "cell_code")
        source = _cell_source(cell) if cell is not None else None
        figure_repr = None
        for container in bundle.children:
            if isinstance(container, nodes.Element) and container.get("mime_type") == "text/plain":
                figure_repr = container.astext()
        figure = _ancestor(bundle, lambda n: isinstance(n, nodes.figure))
        caption = None
        if figure is not None:
            captions = [c for c in figure.children if isinstance(c, nodes.caption)]
            caption = captions[0].astext() if captions else None
        image["alt"] = describe_figure(caption, source, figure_repr)
        if "no title or axis labels" in image["alt"]:
            where = f"cell {cell.get('cell_index')}" if cell is not None else "an output"
            logger.verbose(f"gmcourse_figure_alt: {docname}, {where}: figure without caption, title or labels; "
                           "write `mystnb: image: alt: ...` in the cell's metadata")


def setup(app: Sphinx) -> dict:
    app.connect("doctree-read", add_alt_texts)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
