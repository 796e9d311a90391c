"""A check, run by the executor inside every test cell, that the notebook has not replaced what the
tests rely on.

Answer cells run in the same Python process as the tests, so an answer can rebind
``torch.testing.assert_close`` or ``math.isclose``, shadow ``isinstance``, swap ``builtins.exec``
(which IPython uses to run every later cell), install a trace function that jumps over ``assert``
lines, or register an IPython hook. Right after the kernel starts, before any student code, the
executor takes a *snapshot*: the memory address of every function, class and module in
:data:`WATCHED_MODULES`, in ``builtins``, in IPython's and ipykernel's classes and instances, plus
the trace and profile functions and IPython's event callbacks. Each test cell is then executed with
:func:`check_code` appended: if the test's own code ran to its end, the check recomputes the
snapshot and sends it back inside a ``KeyError`` whose key also carries a fresh random nonce. The
executor removes that output and compares: a test cell after which anything in the snapshot
changed, or whose check did not report at all although the cell "passed", scores 0, and the reason
names what was replaced.

The check reaches everything through objects that code cannot rebind (``object.__repr__`` for
addresses, the frame's builtins for ``__import__``, whose result is itself checked by address), so
a forged route shows up as a changed address. It cannot stop code that learns this check and
restores the originals around it, or writes memory through ``ctypes``: those submissions are
flagged for the instructor's look (:mod:`gmcourse.grading.flags`).
"""

from __future__ import annotations

import secrets

WATCHED_MODULES = ("sys", "math", "operator", "functools", "torch", "torch.testing", "torch.testing._comparison",
                   "torch.distributions", "torch.nn", "torch.nn.functional", "numpy", "numpy.testing",
                   "numpy.testing._private.utils", "IPython.core.interactiveshell", "ipykernel.ipkernel",
                   "ipykernel.zmqshell", "ipykernel.kernelbase", "matplotlib_inline.backend_inline",
                   "matplotlib.pyplot")
# modules whose names a notebook's namespace must not bind to anything but the real module
MODULE_NAMES = {"torch": "torch", "np": "numpy", "numpy": "numpy", "math": "math", "F": "torch.nn.functional",
                "nn": "torch.nn"}

# kinds of objects in the snapshot (type names): what tests call, and what holds it
KINDS = ("type", "function", "builtin_function_or_method", "module", "method", "classmethod", "staticmethod",
         "property", "wrapper_descriptor", "method_descriptor", "getset_descriptor", "cython_function_or_method",
         "functools.partial", "partial")
# builtins that tests use and that a notebook's top level must not shadow (the same list the flags watch)
SHADOWED = ("isinstance", "issubclass", "type", "float", "int", "bool", "str", "tuple", "abs", "len", "all", "any",
            "getattr", "hasattr", "globals", "AssertionError", "Exception", "__import__")
# entries that the kernel and torch change by themselves: ipykernel on every execution (stdin forwarding,
# its excepthook), torch when torch._dynamo first loads
VOLATILE = {"builtins.input", "builtins.raw_input", "builtins.getpass", "sys.excepthook", "sys.displayhook",
            "torch.manual_seed"}  # torch._dynamo wraps torch.manual_seed when it first loads (an optimizer step)
SETUP = ("import " + ", ".join(m for m in WATCHED_MODULES if not m.startswith(("IPython", "ipykernel"))) +
         "\nimport matplotlib_inline.backend_inline, matplotlib.pyplot\n")

# Names are prefixed and the code uses no builtin by name: every value comes from a literal or from
# an object whose address is itself in the snapshot.
_CHECK = r'''
__gm_O = ().__class__.__mro__[-1]
__gm_T = ().__class__.__class__
__gm_r = __gm_O.__repr__
__gm_a = lambda v: __gm_r(v).rpartition(" at ")[2][:-1]
__gm_b = (lambda: (yield))().gi_frame.f_builtins
__gm_g = (lambda: 0).__globals__
__gm_s = __gm_b["__import__"]("sys")
__gm_M = __gm_T(__gm_s)
__gm_kinds = KINDS
__gm_kind = lambda v: __gm_T.__dict__["__name__"].__get__(__gm_T(v))
__gm_out = ["=builtins=" + __gm_a(__gm_b), "=sys=" + __gm_a(__gm_s), "=sys.modules=" + __gm_a(__gm_s.modules),
            "=module type=" + __gm_a(__gm_M), "=trace=" + __gm_a(__gm_s.gettrace()),
            "=profile=" + __gm_a(__gm_s.getprofile()), "=namespace builtins=" + __gm_a(__gm_g.get("__builtins__"))]
__gm_out += ["builtins." + __gm_n + "=" + __gm_a(__gm_v) for __gm_n, __gm_v in [*__gm_b.items()]
             if __gm_kind(__gm_v) in __gm_kinds]
__gm_out += ["shadowed builtin " + __gm_n + "=" + __gm_a(__gm_g[__gm_n]) for __gm_n in SHADOWED
             if __gm_n in __gm_g]
__gm_out += ["namespace " + __gm_n + "=" + ("ok" if __gm_s.modules.get(__gm_m) is __gm_g[__gm_n] else __gm_a(__gm_g[__gm_n]))
             for __gm_n, __gm_m in MODULE_NAMES.items() if __gm_n in __gm_g]
__gm_classes = []
for __gm_name in WATCHED_MODULES:
    __gm_mod = __gm_s.modules.get(__gm_name)
    __gm_out.append("module " + __gm_name + "=" + __gm_a(__gm_mod))
    if __gm_T(__gm_mod) is __gm_M:
        for __gm_n, __gm_v in [*__gm_O.__getattribute__(__gm_mod, "__dict__").items()]:
            if __gm_kind(__gm_v) in __gm_kinds:
                __gm_out.append(__gm_name + "." + __gm_n + "=" + __gm_a(__gm_v))
                if __gm_T(__gm_v) is __gm_T and __gm_name != "torch.distributions":
                    __gm_classes.append((__gm_name + "." + __gm_n, __gm_v))
__gm_ip = __gm_s.modules.get("IPython.core.interactiveshell")
__gm_shell = __gm_T.__getattribute__(__gm_O.__getattribute__(__gm_ip, "__dict__")["InteractiveShell"], "_instance")
__gm_app = __gm_s.modules.get("ipykernel.kernelapp")
__gm_app = __gm_T.__getattribute__(__gm_O.__getattribute__(__gm_app, "__dict__")["IPKernelApp"], "_instance")
__gm_kernel = __gm_O.__getattribute__(__gm_app, "kernel")
for __gm_what, __gm_inst in (("shell", __gm_shell), ("kernel", __gm_kernel)):
    __gm_out.append(__gm_what + "=" + __gm_a(__gm_inst) + " of " + __gm_a(__gm_T(__gm_inst)))
    __gm_out += [__gm_what + " instance ." + __gm_n + "=" + __gm_a(__gm_v)
                 for __gm_n, __gm_v in [*__gm_O.__getattribute__(__gm_inst, "__dict__").items()]
                 if __gm_kind(__gm_v) in __gm_kinds]
    __gm_classes += [(__gm_what + " class " + __gm_c.__qualname__, __gm_c) for __gm_c in __gm_T(__gm_inst).__mro__]
for __gm_cname, __gm_c in __gm_classes:
    __gm_out += [__gm_cname + "." + __gm_n + "=" + __gm_a(__gm_v)
                 for __gm_n, __gm_v in [*__gm_T.__getattribute__(__gm_c, "__dict__").items()]
                 if __gm_kind(__gm_v) in __gm_kinds]
__gm_events = __gm_O.__getattribute__(__gm_O.__getattribute__(__gm_shell, "events"), "callbacks")
__gm_out += ["=event " + __gm_n + "=" + ",".join([__gm_a(__gm_f) for __gm_f in __gm_v])
             for __gm_n, __gm_v in [*__gm_events.items()]]
__gm_out += ["=custom exceptions=" + __gm_a(__gm_O.__getattribute__(__gm_shell, "custom_exceptions"))]
{}["NONCE\n" + "\n".join(__gm_out)]
'''


def check_code(nonce: str) -> str:
    """The code appended to a test cell (and run alone at the start for the snapshot)."""
    return (_CHECK.replace("WATCHED_MODULES", repr(WATCHED_MODULES)).replace("MODULE_NAMES", repr(MODULE_NAMES))
            .replace("KINDS", repr(KINDS)).replace("SHADOWED", repr(SHADOWED)).replace("NONCE", nonce))


def new_nonce() -> str:
    return "gmcourse-check-" + secrets.token_hex(16)


def parse_report(evalue: str, nonce: str) -> dict[str, str] | None:
    """The snapshot inside a check's ``KeyError`` message, or None if it is not this check's."""
    import ast

    try:
        text = ast.literal_eval(evalue)
    except (ValueError, SyntaxError):
        return None
    if not isinstance(text, str) or not text.startswith(nonce + "\n"):
        return None
    return dict(line.rsplit("=", 1) for line in text[len(nonce) + 1:].splitlines())


def changes(baseline: dict[str, str], now: dict[str, str]) -> list[str]:
    """What the notebook replaced: entries of the baseline that changed or vanished, and any new
    shadowing of a builtin, rebinding of a module name, event callback or exception handler. New
    attributes of watched modules (a submodule imported later) are not changes."""
    known = {address for value in baseline.values() for address in value.split(",")}

    def replaced(name: str, value: str | None) -> bool:
        if name in VOLATILE:
            return False
        if name.startswith("=event "):  # a callback that the libraries register (matplotlib's) is fine
            return value != baseline.get(name) and any(address not in known for address in (value or "").split(",") if address)
        if name in baseline:
            return value != baseline[name]
        return value != "ok" and (name.startswith(("shadowed builtin", "=", "namespace")) or " instance ." in name)

    changed = [name for name in baseline if name not in now and name not in VOLATILE]
    changed += [name for name, value in now.items() if replaced(name, value)]
    return sorted({name.strip("=") for name in changed})
