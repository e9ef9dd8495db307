"""`python -m gpt2lab.explain.gpu_speed_cli BENCH.json [MORE.json ...] --device NAME`: one record for
explain/gpu_recorded.py from the outputs of `gpt2lab bench --device cuda --json` (tools/gpu_checks.sh runs it)."""
from __future__ import annotations

import argparse
import datetime
import json

from .gpu_speed import record_from_bench


def main(argv=None) -> int:
    """Print the record as JSON; the bench files' lists (ops, steps, matmul_ladder) are joined, their objects
    (profile, peaks) taken from the last file that has them."""
    p = argparse.ArgumentParser(prog="python -m gpt2lab.explain.gpu_speed_cli", description=main.__doc__)
    p.add_argument("bench", nargs="+", help="bench --json outputs; their lists are joined")
    p.add_argument("--device", required=True, help="the GPU, as nvidia-smi names it")
    p.add_argument("--software", default="", help="versions: numba, numba-cuda, torch, CUDA")
    p.add_argument("--code", default="", help="the commit measured")
    p.add_argument("--date", default=datetime.date.today().isoformat())
    args = p.parse_args(argv)
    bench: dict = {}
    for path in args.bench:
        with open(path) as f:
            for key, value in json.load(f).items():
                if isinstance(value, list):
                    bench.setdefault(key, []).extend(value)
                elif isinstance(value, dict):   # "profile", "peaks": one per run, the last file's kept
                    bench[key] = value
    print(json.dumps(record_from_bench(bench, args.device, args.date, args.software, args.code), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
