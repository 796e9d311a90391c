"""Hints for the instructor: answer cells that patch what the tests rely on, and locked cells that a
submission edited, re-pointed or deleted (nbgrader restores those before grading)."""

from __future__ import annotations

import ast


def notebook_signature(nb) -> list[tuple]:
    """What must agree between two generated student versions: cell types, sources, nbgrader metadata."""
    return [(cell.cell_type, cell.source, dict(cell.metadata.get("nbgrader", {}))) for cell in nb.cells]


def _python_source(source: str) -> str:
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


_WATCHED_MODULES = {"torch", "np", "numpy", "math", "builtins", "__builtins__", "sys", "scipy", "unittest", "pytest"}
_COMPARISON_METHODS = {"__eq__", "__ne__", "__bool__", "__float__", "__lt__", "__le__", "__gt__", "__ge__",
                       "__abs__", "__array__", "__torch_function__", "__instancecheck__"}
# names whose rebinding at top level could make a test cell's check pass wrongly
_TRUSTED_NAMES = _WATCHED_MODULES | {"assert_close", "allclose", "isclose", "type", "isinstance", "issubclass",
                                     "float", "int", "bool", "str", "tuple", "abs", "len", "all", "any", "globals",
                                     "getattr", "hasattr", "AssertionError", "Exception", "__import__"}


def _root_name(node) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _bound_names(target) -> list:
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for element in target.elts for n in _bound_names(element)]
    return [target.value if isinstance(target, ast.Starred) else target]


def _top_level_bindings(tree):
    """Names the cell binds in the notebook's namespace (not inside function or class bodies)."""
    for statement in tree.body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield statement.name
            continue
        for node in ast.walk(statement):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                yield node.id
            elif isinstance(node, (ast.Import, ast.ImportFrom)):  # `import numpy as np` is fine
                yield from (a.asname for a in node.names if a.asname and (a.name, a.asname) != ("numpy", "np")
                            and a.asname != a.name.split(".")[-1])


def gaming_flags(source: str) -> list[str]:
    """Reasons to look twice at an answer cell: it patches what the tests rely on.

    Flags reassigning attributes of torch/numpy/math/builtins (``torch.testing.assert_close = ...``),
    rebinding built-in names (``type``, ``isinstance``, ``float``...) at top level, defining comparison
    methods such as ``__eq__``, ``setattr`` on those modules, exec/eval, ``sys.modules`` and reading
    ``NBGRADER_EXECUTION``. A flag is a hint for the instructor, not a verdict.
    """
    try:
        tree = ast.parse(_python_source(source))
    except (SyntaxError, ValueError):
        return []  # it will fail to run, which the tests already punish
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for target in (t for group in targets for t in _bound_names(group)):
                if isinstance(target, (ast.Attribute, ast.Subscript)) and _root_name(target) in _WATCHED_MODULES:
                    found.append(f"assigns to {ast.unparse(target)}")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in _COMPARISON_METHODS:
            found.append(f"defines {node.name}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in {"setattr", "delattr"} and node.args and _root_name(node.args[0]) in _WATCHED_MODULES:
                found.append(f"calls {node.func.id}({ast.unparse(node.args[0])}, ...)")
            elif node.func.id in {"exec", "eval", "compile", "__import__"}:
                found.append(f"calls {node.func.id}()")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"imports {m}" for m in modules if m.split(".")[0] in {"builtins", "ctypes", "gc"}]
        elif isinstance(node, ast.Attribute) and ast.unparse(node) == "sys.modules":
            found.append("touches sys.modules")
        elif isinstance(node, ast.Name) and node.id == "__builtins__":
            found.append("touches __builtins__")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "NBGRADER" in node.value:
            found.append("reads NBGRADER_EXECUTION (behaves differently under the grader)")
    found += [f"rebinds {name!r}" for name in _top_level_bindings(tree) if name in _TRUSTED_NAMES]
    return sorted(set(found))


def submission_flags(submitted, release) -> list[str]:
    """Flags from comparing a submitted notebook with the released student version."""
    locked = {c.metadata["nbgrader"]["grade_id"]: c for c in release.cells
              if c.metadata.get("nbgrader", {}).get("locked")}
    seen, edited, points, flags = set(), [], [], []
    for cell in submitted.cells:
        meta = cell.metadata.get("nbgrader", {})
        original = locked.get(meta.get("grade_id"))
        if original is None:
            if cell.cell_type == "code":
                flags += gaming_flags(cell.source)
            continue
        seen.add(meta["grade_id"])
        if original.cell_type == "code" and cell.source != original.source:
            edited.append(meta["grade_id"])
        if original.metadata["nbgrader"].get("grade") and meta.get("points") != original.metadata["nbgrader"]["points"]:
            points.append(meta["grade_id"])
    deleted = [g for g, c in locked.items() if g not in seen and c.cell_type == "code"]
    for what, ids in (("edited", edited), ("changed the points of", points), ("deleted", deleted)):
        if ids:
            flags.append(f"{what} locked cell(s) {', '.join(ids)} (restored before grading)")
    return sorted(set(flags), key=flags.index)
