"""`gpt2lab bench`: our kernels, one training step and the BPE tokenizer, each against its reference.

The pieces live where what they time lives: kernels/bench.py (each op against PyTorch), gpt2/bench.py (a
whole step, numba backend against torch backend), datasets/bench_bpe.py (our BPE against tiktoken).
"""
from __future__ import annotations

import argparse
import json
import sys

from gpt2lab.kernels.bench import OP_BENCHES, bench_matmul_ladder, bench_ops, device_peaks, gpu_name
from gpt2lab.signals import STOP_CODES, handling, raise_interrupt, stopped_by

from .choices import FLASHES, MATMULS


def bench_tokenizer(progress=print) -> dict:
    from gpt2lab.datasets.bench_bpe import bench_bpe
    res = bench_bpe()
    progress("  tokenizer " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in res.items()))
    return res


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--op", action="append", choices=list(OP_BENCHES), help="only this op (repeatable)")
    p.add_argument("--steps", default="tiny,small,gpt2",
                   help="comma-separated configs for the whole-step benchmark ('' to skip)")
    p.add_argument("--no-ops", action="store_true", help="skip the per-op benchmark")
    p.add_argument("--no-tokenizer", action="store_true", help="skip the tokenizer benchmark")
    p.add_argument("--reps", type=int, default=7, help="timed repetitions per side (median reported)")
    p.add_argument("--json", action="store_true", help="print one JSON object with every figure")
    p.add_argument("--matmul", choices=MATMULS, default="numba",
                   help="the matmuls 'ours' runs on cuda: our kernels (default), one of our versions by name (e.g. "
                        "v7, the default before v8, or a candidate before it is one) or cuBLAS on the same memory "
                        "(the linear layers and attention's q k^T and att v)")
    p.add_argument("--flash", choices=FLASHES, default=None,
                   help="on cuda: the flash attention version of our fused-path step, in the whole-step benchmark and "
                        "--profile (default: the kernels' default, kernels/attention.py's DEFAULT_FLASH; the op "
                        "benchmark times each, attention_flash, attention_flash_v5 and attention_flash_v6)")
    p.add_argument("--ladder", action=argparse.BooleanOptionalAction, default=None,
                   help="time every matmul version, TFLOP/s and %% of cuBLAS (default: on with --device cuda)")
    p.add_argument("--ladder-version", action="append", metavar="VERSION",
                   help="the ladder times only this matmul version (repeatable; implies --ladder), and always its "
                        "reference (cuBLAS on cuda, blas on the CPU): e.g. the candidates against the default")
    # the whole-step benchmark's batch (on a GPU, e.g. --steps gpt2 --batch 4 --seq 1024)
    p.add_argument("--batch", type=int, default=4, help="whole step: sequences per batch B")
    p.add_argument("--seq", type=int, default=64, help="whole step: tokens per sequence T (<= each config's context)")
    p.add_argument("--profile", action="store_true",
                   help="with --device cuda: time each kernel of one training step of the last --steps config "
                        "(default gpt2) at --batch, --seq with CUDA events (JSON key 'profile')")


def run(args) -> int:
    if args.reps <= 0:
        print(f"gpt2lab bench: --reps must be positive, got {args.reps}", file=sys.stderr)
        return 2
    from .config import PRESETS  # the whole-step benchmark's model shapes
    unknown = [c for c in args.steps.split(",") if c and c not in PRESETS]
    if unknown:
        print(f"gpt2lab bench: --steps {','.join(unknown)}: unknown config; choose from {', '.join(PRESETS)} "
              f"(comma-separated, '' to skip)", file=sys.stderr)
        return 2
    if args.batch <= 0 or args.seq <= 0:
        print(f"gpt2lab bench: --batch and --seq must be positive, got {args.batch} and {args.seq}", file=sys.stderr)
        return 2
    too_long = [c for c in args.steps.split(",") if c and args.seq > PRESETS[c]["block_size"]]
    if too_long:
        print(f"gpt2lab bench: --seq {args.seq} is longer than the context of --steps {','.join(too_long)}",
              file=sys.stderr)
        return 2
    if args.profile and args.device != "cuda":
        print("gpt2lab bench: --profile times CUDA kernels: it needs --device cuda", file=sys.stderr)
        return 2
    if args.profile and not configs_of(args):
        print("gpt2lab bench: --profile profiles a step of the last --steps config, but --steps is empty",
              file=sys.stderr)
        return 2
    error = _ladder_error(args)   # before the GPU test: a typo'd version fails here too, not on the GPU alone
    if error:
        print(f"gpt2lab bench: {error}", file=sys.stderr)
        return 2
    if args.device == "cuda":
        import torch
        from numba import cuda
        if not (cuda.is_available() and torch.cuda.is_available()):
            print("gpt2lab bench: --device cuda needs an NVIDIA GPU that numba and PyTorch both see; none found "
                  f"(numba: {cuda.is_available()}, torch: {torch.cuda.is_available()})", file=sys.stderr)
            return 2
    error = _matmul_error(args)
    if error:
        print(f"gpt2lab bench: {error}", file=sys.stderr)
        return 2
    say = (lambda m: print(m, file=sys.stderr)) if args.json else print
    out = {"device": args.device, "matmul": args.matmul, **({"flash": args.flash} if args.flash else {})}
    if args.device == "cuda":   # which GPU, and its data-sheet peaks (None: not in kernels.bench.DEVICE_PEAKS)
        out["gpu"] = gpu_name()
        out["peaks"] = device_peaks(out["gpu"])
    code = 0
    try:
        with handling(("SIGTERM",), raise_interrupt):
            measure(args, out, say)
    except KeyboardInterrupt as e:   # Ctrl-C, or SIGTERM (e.g. a time limit): keep what was measured
        out["interrupted"] = stopped_by(e)
        code = STOP_CODES[out["interrupted"]]
        say(f"gpt2lab bench: stopped by {out['interrupted']}: the figures measured before it are kept"
            + (" (the JSON below)" if args.json else ""))
    if args.device == "cuda":   # whether our launches were prepared (kernels/_cuda.py), as the run ended
        from gpt2lab.kernels import _cuda
        out["prepared_launch"] = _cuda.PREPARED_LAUNCH
    if args.json:
        print(json.dumps(out, indent=1))
    return code


def measure(args, out: dict, say) -> None:
    """Run the benchmarks args asks for, filling `out` one finished row at a time (an op at a shape, a ladder
    shape, a step config, a profile): each benchmark appends a row to out's list the moment it has it, so an
    interrupt keeps every row finished before it."""
    matmul_version = None if args.matmul == "numba" else args.matmul
    if not args.no_ops:
        say(f"kernels, forward+backward, median of {args.reps} (ratio = ours/torch):")
        bench_ops(args.device, args.op, args.reps, progress=say, matmul_version=matmul_version,
                  rows=out.setdefault("ops", []))
    if args.ladder or args.ladder_version or (args.ladder is None and args.device == "cuda" and not args.no_ops):
        say(f"matmul versions, forward+backward, median of {args.reps}:")
        bench_matmul_ladder(args.device, args.reps, versions=ladder_versions(args), progress=say,
                            rows=out.setdefault("matmul_ladder", []))
    configs = configs_of(args)
    if configs:
        from .bench import bench_steps
        say("one training step (forward, backward, AdamW):")
        bench_steps(args.device, configs, B=args.batch, T=args.seq, reps=max(1, args.reps // 2), progress=say,
                    kernels=_step_kernels(args), rows=out.setdefault("steps", []))
    if args.profile:
        from .bench import profile_step_cuda
        say("where one step's GPU time goes (CUDA events around each kernel launch):")
        for key, fused in (("profile", False), ("profile_fused", True)):   # the per-op path, then the fused one
            out[key] = profile_step_cuda(configs[-1], B=args.batch, T=args.seq, progress=say,
                                         kernels=_step_kernels(args), fused=fused)
    if not args.no_tokenizer:
        say("tokenizer:")
        out["tokenizer"] = bench_tokenizer(progress=say)


def configs_of(args) -> list[str]:
    """The configs of --steps, in order."""
    return [c for c in args.steps.split(",") if c]


def ladder_versions(args) -> tuple | None:
    """The ladder's versions: --ladder-version's, with the reference added (None: every version)."""
    if not args.ladder_version:
        return None
    from gpt2lab.kernels.bench import LADDER_REFERENCE
    return tuple(dict.fromkeys([*args.ladder_version, LADDER_REFERENCE[args.device]]))


def _ladder_error(args) -> str | None:
    """Why --ladder-version cannot run here, in one line (None: it can)."""
    if not args.ladder_version:
        return None
    from gpt2lab.kernels import matmul
    known = matmul.CUDA_VERSIONS if args.device == "cuda" else matmul.CPU_VERSIONS
    unknown = [v for v in args.ladder_version if v not in known]
    if args.ladder is False:
        return "--ladder-version and --no-ladder contradict each other: give one"
    if unknown:
        return f"--ladder-version {unknown[0]}: not a matmul version on {args.device}; choose from {', '.join(known)}"
    return None


def _matmul_error(args) -> str | None:
    """Why --matmul or --flash cannot run here, in one line (None: it can)."""
    if args.flash is not None and args.device != "cuda":
        return f"--flash {args.flash} runs on the GPU: it needs --device cuda"
    if args.matmul == "numba":
        return None
    from .cli import CommandError
    from .train import check_cublas_usable
    if args.device != "cuda":
        return f"--matmul {args.matmul} runs on the GPU: it needs --device cuda"
    if args.matmul != "cublas":
        return None
    try:
        check_cublas_usable(f"--matmul {args.matmul}")
    except CommandError as e:
        return str(e)
    return None


def _step_kernels(args):
    """The whole step's Kernels for --matmul and --flash (None: the defaults)."""
    from .train import matmul_kernels
    return matmul_kernels(args.matmul, flash=args.flash)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="gpt2lab bench", description=__doc__)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
