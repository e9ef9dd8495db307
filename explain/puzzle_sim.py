"""The simulator side of the kernel puzzles: `python -m gpt2lab.explain.puzzle_sim ACTION NAME FILE [STEPS]`.

Started by explain/puzzles.py with NUMBA_ENABLE_CUDASIM=1, so that numba's CUDA simulator is on in this process
(and never in the notebook that asked). FILE is puzzles.HEADER followed by the learner's cell; it is imported
as a module and its function NAME is the kernel.

    check   the puzzle's check: {"result": CheckResult fields, "trace": the first case's traced launch (JSON)}
    train   the micro GPT-2 trained STEPS steps with the kernel plugged in: {"losses", "reports"}

A learner's kernel that does not even load (a syntax error, no function NAME) is a failed check, not a crash.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import asdict

from .simulator import child_ready


def load(name: str, path: str):
    """The function `name` of the file at `path`, imported as a module (so its source lines are readable)."""
    spec = importlib.util.spec_from_file_location(f"puzzle_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, name):
        raise LookupError(f"the puzzle cell defines no function named {name}")
    return getattr(module, name)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not child_ready("puzzle_sim", "gpt2lab.explain.puzzles"):
        return 2
    from gpt2lab.kernels._cudasim import install
    install()   # our simulator's blocks (greenlets, not numba's OS thread a CUDA thread): the training is all launches
    action, name, path = argv[:3]
    from .exercise import CheckResult
    from .puzzles import run_puzzle_check, train_plugged
    try:
        kernel = load(name, path)
    except Exception as e:  # noqa: BLE001 - the learner's cell may not even compile; say so in the panel
        if action != "check":
            raise
        result = CheckResult(name, False, [], problem=f"the cell does not load: {type(e).__name__}: {e}",
                             hint="run the cell itself first: it must define the kernel and nothing else")
        print(json.dumps({"result": asdict(result), "trace": None}))
        return 0
    if action == "check":
        result, trace = run_puzzle_check(name, kernel)
        print(json.dumps({"result": asdict(result), "trace": trace.to_json() if trace is not None else None}))
    elif action == "train":
        print(json.dumps(train_plugged(name, kernel, int(argv[3]))))
    else:
        print(f"puzzle_sim: unknown action {action!r}; expected check or train", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
