"""`python -m gpt2lab.gpt2.host_profile_cli`: where a training step's host time goes (gpt2/host_profile.py), as a
report or JSON."""
from __future__ import annotations

import argparse
import json
import sys

from .host_profile import format_report, host_profile


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gpt2lab.gpt2.host_profile_cli", description="where a training step's host time goes: cProfile of the kernel GPT-2's steps")
    p.add_argument("--device", choices=("cuda", "cudasim"), default="cuda")
    p.add_argument("--config", default="tiny", help="a preset of gpt2/config.py (default tiny: the host-bound one)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="steps timed, then profiled (after 2 warm-up steps)")
    p.add_argument("--per-op", action="store_true", help="the per-op path (default: the fused one, a GPU's default)")
    p.add_argument("--top", type=int, default=25, help="functions listed, by their own time")
    p.add_argument("--json", action="store_true")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .config import PRESETS
    if args.config not in PRESETS:
        print(f"host_profile: --config {args.config}: unknown; choose from {', '.join(PRESETS)}", file=sys.stderr)
        return 2
    for name in ("batch", "seq", "steps", "top"):
        if getattr(args, name) <= 0:
            print(f"host_profile: --{name} must be positive, got {getattr(args, name)}", file=sys.stderr)
            return 2
    if args.seq > PRESETS[args.config]["block_size"]:
        print(f"host_profile: --seq {args.seq} is longer than {args.config}'s context", file=sys.stderr)
        return 2
    from numba import config as numba_config
    from numba import cuda
    if args.device == "cudasim" and not numba_config.ENABLE_CUDASIM:
        print("host_profile: --device cudasim needs NUMBA_ENABLE_CUDASIM=1 set before Python starts", file=sys.stderr)
        return 2
    if args.device == "cuda" and (numba_config.ENABLE_CUDASIM or not cuda.is_available()):
        print("host_profile: --device cuda needs an NVIDIA GPU that numba sees; none found", file=sys.stderr)
        return 2
    report = host_profile(args.config, args.batch, args.seq, args.steps, args.device, not args.per_op, args.top)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
