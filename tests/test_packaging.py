"""The install `make setup` makes: strict editable (a link tree), no top-level `kernels`, and re-run when a
module is added (the link tree would not have it)."""
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_top_level_folders_are_not_packages_of_their_own(tmp_path):
    """`gpt2lab.kernels` imports, a top-level `kernels` or `gpt2` does not (run outside the checkout, whose
    folder would otherwise be on sys.path as the current directory)."""
    code = ("import importlib.util, gpt2lab.kernels.check\n"
            "print([m for m in ('kernels', 'gpt2', 'explain', 'widgets') if importlib.util.find_spec(m)])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_the_install_is_a_strict_link_tree():
    """In strict mode gpt2lab/kernels/check.py is a link in build/ to kernels/check.py: static tools can
    follow `gpt2lab.kernels` to a folder of that name. A lenient install points at kernels/ itself."""
    import gpt2lab.kernels.check as check
    path = pathlib.Path(check.__file__)
    assert path.resolve() == ROOT / "kernels" / "check.py"
    assert path.parent.parent.name == "gpt2lab", f"{path}: not a strict editable install (run make setup)"


def _setup(venv, *args) -> str:
    """`make setup` with echo for Python: prints the commands it would run, installs nothing."""
    proc = subprocess.run(["make", "-s", f"VENV={venv}", "PY=echo", "PYTHON=echo", *args, "setup"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_setup_runs_again_when_a_module_is_added(tmp_path):
    venv = tmp_path / "venv"
    assert "editable_mode=strict" in _setup(venv)
    assert "install" not in _setup(venv)  # nothing changed: nothing to do
    assert "editable_mode=strict" in _setup(venv, "MODULE_FILES=kernels/check.py kernels/new_op.py")
    assert "install" not in _setup(venv, "MODULE_FILES=kernels/check.py kernels/new_op.py")


def _type_checking_imports(init: pathlib.Path) -> dict:
    """name -> module of the `if TYPE_CHECKING:` imports of a package's __init__."""
    import ast
    found = {}
    for node in ast.walk(ast.parse(init.read_text())):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for imp in node.body:
                found.update({a.name: imp.module for a in imp.names})
    return found


def test_lazy_exports_are_visible_to_static_tools_and_agree():
    import importlib
    for package in ("gpt2", "widgets"):
        module = importlib.import_module(f"gpt2lab.{package}")
        seen = _type_checking_imports(pathlib.Path(module.__file__))
        assert seen == module._EXPORTS, f"gpt2lab.{package}: TYPE_CHECKING imports differ from _EXPORTS"
        for name, where in seen.items():   # and each name really lives in the module it is listed under
            assert getattr(importlib.import_module(f"gpt2lab.{package}.{where}"), name) is getattr(module, name)
