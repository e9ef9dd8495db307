"""`gpt2lab verify`: every kernel against PyTorch, as a table; exit 1 on any FAIL. With --same-as: one version
against another, bit for bit (kernels/same_bits.py); exit 1 on any difference."""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", choices=("cpu", "cudasim", "cuda"),
                   help="cpu: numba @njit; cudasim: CUDA kernels in numba's simulator; cuda: a real GPU")
    p.add_argument("--op", action="append", help="check only this op (repeatable); default: all")
    p.add_argument("--version", help="check only this kernel version (e.g. v2)")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of the table")
    p.add_argument("--same-as", metavar="VERSION",
                   help="instead of PyTorch, check --version's results against this version's, bit for bit (a "
                        "version that reschedules another's sums must give its bits: --device cuda --op matmul "
                        "--version v8 --same-as v7); without --op, every op that has both versions")
    p.add_argument("--shape", action="append", metavar="JSON",
                   help="check at this shape instead of the op's own (repeatable; one --op), e.g. "
                        "--op matmul --shape '{\"B\": 1, \"T\": 257, \"C\": 33, \"OC\": 257}'")


def _reexec_with_simulator(args) -> None:
    # The simulator is chosen when numba is first imported; start afresh with the variable set.
    argv = ["--device", "cudasim", *sum((["--op", o] for o in args.op or []), [])]
    argv += (["--version", args.version] if args.version else []) + (["--json"] if args.json else [])
    argv += ["--same-as", args.same_as] if args.same_as else []
    argv += sum((["--shape", s] for s in args.shape or []), [])
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    os.execve(sys.executable, [sys.executable, "-m", "gpt2lab.kernels.verify_cli", *argv], env)


def _shapes(args):
    """--shape's JSON objects (None: the ops' own shapes); ValueError in one line for one that is not JSON."""
    if not args.shape:
        return None
    shapes = []
    for text in args.shape:
        try:
            shapes.append(json.loads(text))
        except json.JSONDecodeError as e:
            raise ValueError(f"verify: --shape {text!r} is not JSON ({e.msg})") from None
    return shapes


def run(args) -> int:
    if args.device == "cudasim" and os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        if "numba" in sys.modules:
            _reexec_with_simulator(args)
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    from .check import OPS, check_shape_request, format_table, passed, verify
    ops = args.op or list(OPS)
    bad = [o for o in ops if o not in OPS]
    if bad:
        print(f"gpt2lab verify: unknown op {bad[0]!r}; choose from {', '.join(OPS)}", file=sys.stderr)
        return 2
    try:   # the arguments first: a wrong --shape is one line here too, not only where a GPU is
        shapes = _shapes(args)
        if shapes is not None:
            check_shape_request(ops, args.device, shapes)
    except ValueError as e:
        print(f"gpt2lab {e}", file=sys.stderr)
        return 2
    if args.same_as and not args.version:
        print("gpt2lab verify: --same-as compares one version with another: give --version too", file=sys.stderr)
        return 2
    if args.device == "cuda":
        from numba import cuda
        if not cuda.is_available():
            print("gpt2lab verify: --device cuda needs an NVIDIA GPU and driver; none found "
                  "(try --device cudasim)", file=sys.stderr)
            return 2
    try:
        if args.same_as:
            return _same_bits(args, ops, shapes)
        return _report(args, ops, lambda op: verify(args.device, [op], args.version, shapes=shapes), format_table,
                       passed)
    except ValueError as e:
        print(f"gpt2lab {e}", file=sys.stderr)
        return 2


def _report(args, ops, check, table, good) -> int:
    """check(op)'s rows for each op, printed (JSON or table); exit 0 when good(rows), else 1. SIGTERM (a time
    limit) or Ctrl-C stops it with the rows of the ops finished before it printed all the same: exit 143 or 130."""
    from gpt2lab.signals import STOP_CODES, each_until_stopped

    rows = []
    stopped = each_until_stopped(ops, check, rows,
                                 done=None if args.json else lambda op: print(f"  checked {op}", file=sys.stderr))
    if stopped:
        print(f"gpt2lab verify: stopped by {stopped}: the {len(rows)} rows checked before it are below",
              file=sys.stderr)
    print(json.dumps([asdict(r) for r in rows], indent=1) if args.json else table(rows))
    return STOP_CODES[stopped] if stopped else 0 if good(rows) else 1


def _same_bits(args, ops, shapes) -> int:
    """--same-as: every op's --version against --same-as, bit for bit; 0 when all the same, 1 otherwise."""
    from . import same_bits
    from .check import device_kind, get_spec
    if not args.op:   # every op that has both versions
        kind = device_kind(args.device)
        ops = [op for op in ops if {args.version, args.same_as} <= set(get_spec(op).versions.get(kind, {}))]
        if not ops:
            raise ValueError(f"verify: no op has both {kind} versions {args.version!r} and {args.same_as!r}")
    return _report(args, ops, lambda op: same_bits.same_bits(op, args.device, args.version, args.same_as, shapes),
                   same_bits.format_table, lambda rows: all(r.same for r in rows))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="gpt2lab verify", description=__doc__)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
