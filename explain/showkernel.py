"""Show a kernel's source in a lesson, before a trace or a check runs it: `show_kernel(fn)`.

A lesson that traces or verifies a kernel should show the code being traced, not a paraphrase of it. Works for
plain functions, numba's @njit and @cuda.jit dispatchers (their Python source is `.py_func`), and
functools.partial (the function it wraps). In Jupyter the source is syntax-highlighted HTML with inline styles
(so it survives the offline handouts); anywhere else it prints as text with line numbers.

    >>> show_kernel(layernorm_forward_kernel_v2)
"""
from __future__ import annotations

import functools
import html
import inspect
import textwrap
from dataclasses import dataclass
from pathlib import Path


@dataclass
class KernelSource:
    """A function's source: its name, the file it lives in (relative to the package), first line and text."""
    name: str
    file: str
    line: int
    text: str

    def __str__(self) -> str:
        width = len(str(self.line + self.text.count("\n")))
        body = "\n".join(f"{self.line + i:>{width}}  {s}" for i, s in enumerate(self.text.splitlines()))
        return f"# {self.name}  ({self.file}, line {self.line})\n{body}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        try:  # pygments comes with IPython; without it, plain text
            from pygments import highlight
            from pygments.formatters import HtmlFormatter
            from pygments.lexers import PythonLexer
        except ImportError:
            return f"<pre>{html.escape(str(self))}</pre>"
        code = highlight(self.text, PythonLexer(), HtmlFormatter(noclasses=True, linenos="inline",
                                                                 linenostart=self.line, style="default"))
        return (f'<div style="font-size:13px"><b>{self.name}</b> <span style="color:#555">{self.file}, '
                f"line {self.line}</span>{code}</div>")


def _unwrap(fn):
    """The plain Python function behind a partial, an @njit / @cuda.jit dispatcher or a launcher."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "py_func", fn)


def _package_path(path: str) -> str:
    """'kernels/layernorm.py' for a file of gpt2lab (where a learner finds it in the repo), else the file name."""
    parts = Path(path).parts
    for root in ("kernels", "explain", "gpt2", "datasets", "widgets"):
        if root in parts:
            return "/".join(parts[len(parts) - 1 - parts[::-1].index(root):])
    return Path(path).name


def kernel_source(fn) -> KernelSource:
    """The source of `fn` (see the module docstring for what it accepts). Raises TypeError naming what was
    given when there is no Python source to show (a builtin, a lambda typed at the prompt is fine)."""
    py = _unwrap(fn)
    try:
        lines, start = inspect.getsourcelines(py)
        path = inspect.getsourcefile(py) or "?"
    except (OSError, TypeError) as e:
        raise TypeError(f"show_kernel: no Python source for {fn!r} ({e})") from None
    return KernelSource(getattr(py, "__qualname__", repr(py)), _package_path(path), start,
                        textwrap.dedent("".join(lines)).rstrip("\n"))


def show_kernel(fn) -> KernelSource:
    """The kernel's source, shown by Jupyter when it is a cell's last line (or print it)."""
    return kernel_source(fn)


__all__ = ["KernelSource", "kernel_source", "show_kernel"]
