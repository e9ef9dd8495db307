"""`python -m gpt2lab.explain.gpu_speed_cli BENCH.json [MORE.json ...] --device NAME`: one record for
explain/gpu_records/ (gpu_recorded.py reads them) from the outputs of `gpt2lab bench --device cuda --json`
(tools/gpu_checks.sh runs it)."""
from __future__ import annotations

import argparse
import datetime
import json
import sys

from .gpu_speed import goals_table, record_from_bench


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments (tests/test_gpu_checks.py parses tools/gpu_checks.sh's line with it)."""
    p = argparse.ArgumentParser(prog="python -m gpt2lab.explain.gpu_speed_cli", description=main.__doc__)
    p.add_argument("bench", nargs="+", help="bench --json outputs; their lists are joined")
    p.add_argument("--device", required=True, help="the GPU, as nvidia-smi names it")
    p.add_argument("--software", default="", help="versions: numba, numba-cuda, torch, CUDA")
    p.add_argument("--code", default="", help="the commit measured")
    p.add_argument("--date", default=datetime.date.today().isoformat())
    p.add_argument("--goals", metavar="PATH", help="also write issue 14's goals checked against the record "
                                                   "(gpu_speed.goals_table) to PATH")
    return p


def read_bench(path: str) -> dict:
    """One bench --json output; ValueError in one line when it is missing, empty or not a JSON object (a bench
    step killed by its time limit leaves a file like that)."""
    try:
        with open(path) as f:
            bench = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a bench --json output ({type(e).__name__}: {e})") from None
    if not isinstance(bench, dict):
        raise ValueError(f"{path}: not a bench --json output (a JSON {type(bench).__name__}, not an object)")
    return bench


def main(argv=None) -> int:
    """Print the record as JSON; the bench files' lists (ops, steps, matmul_ladder) are joined, their objects
    (profile, peaks) taken from the last file that has them, and each step row keeps its file's "matmul" and
    "flash". A
    file that cannot be read is left out with one line on stderr and exit code 1: the record of the steps that
    did finish is still printed. --goals: the issue's goals against that record, in a file
    (tools/gpu_checks.sh appends it to summary.txt)."""
    args = build_parser().parse_args(argv)
    bench: dict = {}
    skipped = 0
    for path in args.bench:
        try:
            one = read_bench(path)
        except ValueError as e:
            print(f"gpu_speed_cli: left out {e}", file=sys.stderr)
            skipped += 1
            continue
        if one.get("interrupted"):   # bench keeps the rows it finished before a SIGTERM (its time limit)
            print(f"gpu_speed_cli: {path} was cut short ({one['interrupted']}): only the rows it finished are in "
                  f"the record", file=sys.stderr)
        for row in one.get("steps") or []:   # which kernels each step row ran: files differ (--matmul, --flash)
            for key in ("matmul", "flash"):
                if isinstance(row, dict) and key in one:
                    row.setdefault(key, one[key])
        for key, value in one.items():
            if isinstance(value, list):
                bench.setdefault(key, []).extend(value)
            elif isinstance(value, dict):   # "profile", "peaks": one per run, the last file's kept
                bench[key] = value
    record = record_from_bench(bench, args.device, args.date, args.software, args.code)
    print(json.dumps(record, indent=1))
    if args.goals:
        with open(args.goals, "w") as f:
            f.write(goals_table(record) + "\n")
    return 1 if skipped else 0


if __name__ == "__main__":
    raise SystemExit(main())
