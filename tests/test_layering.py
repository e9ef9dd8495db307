"""Data flows one way: datasets -> kernels -> gpt2 -> explain -> widgets. A package imports only those
before it (read from the source, so a lazy import inside a function counts too)."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = ("datasets", "kernels", "gpt2", "explain", "widgets")


def imported_packages(path: pathlib.Path) -> set[str]:
    """The gpt2lab packages a module imports: `gpt2lab.<pkg>...` or `from ..<pkg> import` (relative)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and (node.module or "").startswith("gpt2lab."):
                found.add(node.module.split(".")[1])
            elif node.level == 2 and node.module:
                found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("gpt2lab.")}
    return found & set(LAYERS)


@pytest.mark.parametrize("package", LAYERS)
def test_a_package_imports_only_the_layers_before_it(package):
    later = set(LAYERS[LAYERS.index(package) + 1:])
    bad = {f"{p.relative_to(ROOT)} imports {sorted(imported_packages(p) & later)}"
           for p in sorted((ROOT / package).glob("*.py")) if imported_packages(p) & later}
    assert not bad, bad


def test_the_check_sees_a_backward_import(tmp_path):
    bad = tmp_path / "mod.py"
    bad.write_text("def f():\n    from gpt2lab.gpt2.config import GPTConfig\n    from ..explain import x\n")
    assert imported_packages(bad) == {"gpt2", "explain"}


def test_argparse_only_in_command_line_modules():
    """Library modules take arguments; the command-line ones (cli.py, *_cli.py) parse them."""
    bad = [str(p.relative_to(ROOT)) for pkg in LAYERS for p in sorted((ROOT / pkg).glob("*.py"))
           if "argparse" in p.read_text() and not (p.name == "cli.py" or p.stem.endswith("_cli"))]
    assert not bad, bad
