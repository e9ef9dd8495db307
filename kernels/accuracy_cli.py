"""`python -m gpt2lab.kernels.accuracy`: the long-sum accuracy probes of accuracy.py, as a table or JSON."""
from __future__ import annotations

import argparse
import json
import sys

from .accuracy import DEVICES, PROBES, format_rows, measure


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments (tests/test_gpu_checks.py parses tools/gpu_checks.sh's line with it)."""
    parser = argparse.ArgumentParser(prog="python -m gpt2lab.kernels.accuracy", description=__doc__)
    parser.add_argument("--device", choices=DEVICES, default="cudasim")
    parser.add_argument("--probe", choices=sorted(PROBES), action="append", help="default: every probe")
    parser.add_argument("--version", action="append", help="kernel versions (default: the probe's list)")
    parser.add_argument("--json", action="store_true")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.device == "cudasim":
        from numba import config
        if not config.ENABLE_CUDASIM:
            parser.error("--device cudasim needs NUMBA_ENABLE_CUDASIM=1 set before numba is imported")
        from ._cudasim import install
        install()
    if args.device == "cuda":
        from numba import cuda
        if not cuda.is_available():
            print("python -m gpt2lab.kernels.accuracy: --device cuda needs an NVIDIA GPU and driver; none found "
                  "(--device cudasim runs the probes in numba's simulator)", file=sys.stderr)
            return 2
    from gpt2lab.signals import STOP_CODES, each_until_stopped
    rows = []   # SIGTERM (a time limit) or Ctrl-C: the probes measured before it are printed all the same
    stopped = each_until_stopped(args.probe or PROBES, lambda name: measure(name, args.device, args.version), rows)
    if stopped:
        print(f"python -m gpt2lab.kernels.accuracy: stopped by {stopped}: the {len(rows)} rows measured before it "
              "are below", file=sys.stderr)
    print(json.dumps(rows, indent=1) if args.json else format_rows(rows))
    return STOP_CODES[stopped] if stopped else 0


if __name__ == "__main__":
    sys.exit(main())
