"""Your kernels on a GPU: where a training step's time goes, from figures measured on a real GPU.

A lesson cell asks for a `SpeedReport`: measured here when this machine has a CUDA GPU (`gpt2lab bench
--device cuda` underneath), else the newest record in gpu_records/ (read by gpu_recorded.py), measured on a real
GPU and labelled with its device, date and code. The pictures are computed from the report, never drawn by hand:

    ops_figure(report)      each op's time, ours / PyTorch, at two sequence lengths (log scale: 1 = as fast)
    launch_figure(report)   what one kernel launch costs on the host, numba's ways and PyTorch's
    rate_figure(report)     the FLOP rate a GPT-2 124M step reaches, against the GPU's fp32 peak
    ladder_figure(report)   TFLOP/s of each matmul version at GPT-2's matmul shapes
    profile_figure(report)  where one training step's GPU time goes, kernel by kernel (CUDA events,
                            `gpt2lab bench --device cuda --profile`), the GPU's idle gaps as their own bar
    op_rate_figure(report)  each op's achieved memory bandwidth and fp32 FLOP rate as a % of the GPU's
                            data-sheet peaks (kernels/bench.py's op_work and DEVICE_PEAKS)

A figure whose data the record lacks raises a one-line ValueError naming the command that records it (the
H100 record of 2026-11-26 predates the profile, the ladder and the per-op rates: those are unmeasured).

Three things to read off them: the matmul (most of the FLOPs) sets the big step's time; small ops cost the
same at T=64 and T=256, because the host's launch overhead, not the GPU, is what they wait for; and a step of
~500 launches at 15-35 us each spends 8-17 ms on the host before the GPU does any work.
"""
from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np

from . import gpu_recorded
from .palette import FIGURE_MAX_WIDTH_IN, HEAD_PALETTE, OK_COLOR


@dataclass
class SpeedReport:
    """Figures of one GPU (a record of gpu_recorded's shape) and whether they were measured in this session."""
    record: dict
    live: bool

    def source(self) -> str:
        """One line saying where the figures come from: a learner must never mistake a record for a run."""
        r = self.record
        if self.live:
            return f"measured now on this machine's {r['device']}"
        return (f"recorded on {r['device']} on {r['date']} ({r['software']}); {r['code']}. "
                f"This machine has no CUDA GPU, so nothing here was measured now.")


def gpu_available() -> bool:
    """True when numba sees a CUDA GPU (not the simulator)."""
    from numba import config, cuda
    return not config.ENABLE_CUDASIM and cuda.is_available()


def speed_report(measure: bool | None = None) -> SpeedReport:
    """Measured now when `measure` (default: when a GPU is here), else the newest recorded figures."""
    if measure is None:
        measure = gpu_available()
    if measure:
        if not gpu_available():
            raise RuntimeError("speed_report(measure=True): numba sees no CUDA GPU here")
        return SpeedReport(measure_now(), live=True)
    return SpeedReport(gpu_recorded.latest(), live=False)


def measure_now() -> dict:
    """A record measured on this machine's GPU by the benchmarks `gpt2lab bench --device cuda` runs: every op
    at its benchmark shapes, whole steps of tiny and gpt2 at B=4, T=64, and the matmul ladder."""
    import datetime

    from gpt2lab.gpt2.bench import bench_steps, profile_step_cuda
    from gpt2lab.kernels.bench import bench_matmul_ladder, bench_ops, device_peaks, gpu_name
    quiet = lambda *_: None  # noqa: E731
    name = gpu_name()
    bench = {"ops": bench_ops("cuda", None, reps=3, progress=quiet),
             "steps": bench_steps("cuda", ("tiny", "gpt2"), B=4, T=64, reps=3, progress=quiet),
             "matmul_ladder": bench_matmul_ladder("cuda", reps=3, progress=quiet),
             "profile": profile_step_cuda("gpt2", B=4, T=64, progress=quiet), "peaks": device_peaks(name)}
    return record_from_bench(bench, device=name,
                             date=datetime.date.today().isoformat(), software="this environment",
                             code="this checkout")


def _shape_T(shape: str) -> int:
    return int(shape.split("T=")[1].split(",")[0])


def _step_record(s: dict, matmul: str | None, flash: str | None = None) -> dict:
    """One step row of a record from one of bench's: both sides' ms and memory, our launches and host ms, and,
    when bench timed it, the fused path's (fused_*). "matmul" and "flash": the row's own (gpu_speed_cli tags
    each row with its file's `--matmul` and `--flash` when it joins files), else the bench object's; left out
    when neither says."""
    row = {"config": s["config"], "B": s["B"], "T": s["T"], "ours_ms": s["ours_ms"], "torch_ms": s["torch_ms"],
           "ours_mib": s.get("ours_gpu_mib"), "torch_mib": s.get("torch_peak_mib"),
           "launches": s.get("launches_per_step"), "host_ms": s.get("ours_host_ms"),
           "buffers_mib": s.get("ours_buffers_mib")}
    if s.get("fused_ms") is not None:
        row.update(fused_ms=s["fused_ms"], fused_mib=s.get("fused_gpu_mib"),
                   fused_buffers_mib=s.get("fused_buffers_mib"),
                   fused_launches=s.get("fused_launches_per_step"), fused_host_ms=s.get("fused_host_ms"))
    matmul = s.get("matmul", matmul)
    if matmul is not None:
        row["matmul"] = matmul
    flash = s.get("flash", flash)
    if flash is not None:
        row["flash"] = flash
    if s.get("default_path") is not None:
        row["default_path"] = s["default_path"]
    return row


def record_from_bench(bench: dict, device: str, date: str, software: str, code: str) -> dict:
    """A record of gpu_recorded's shape from `gpt2lab bench --device cuda --json`'s object (its "ops", "steps",
    "matmul_ladder", "profile" and "peaks", each optional, and "matmul", which the step rows carry), labelled
    with where, when and on what it was measured. Ops rows with rates (gbytes_s, tflops) become "op_rates";
    peaks also set peak_tflops_fp32."""
    record = {"device": device, "date": date, "software": software, "code": code}
    if bench.get("steps"):
        record["steps"] = [_step_record(s, bench.get("matmul"), bench.get("flash")) for s in bench["steps"]]
    if bench.get("ops"):
        Ts = tuple(sorted({_shape_T(r["shape"]) for r in bench["ops"]}))
        by_op: dict = {}
        for r in bench["ops"]:
            by_op.setdefault(r["op"], {})[_shape_T(r["shape"])] = r["ratio"]
        B = int(bench["ops"][0]["shape"].split("B=")[1].split(",")[0])
        record["op_ratio"] = {"T": Ts, "B": B, **{op: tuple(d.get(t) for t in Ts) for op, d in by_op.items()}}
        rated = [r for r in bench["ops"] if r.get("gbytes_s") is not None]
        if rated:
            record["op_rates"] = [{"op": r["op"], "B": B, "T": _shape_T(r["shape"]), "ms": r["ours_ms"],
                                   "gbytes_s": r["gbytes_s"], "tflops": r["tflops"]} for r in rated]
    if bench.get("matmul_ladder"):
        record["matmul_ladder"] = [{k: r[k] for k in ("shape", "version", "ms", "tflops", "default", "parts")
                                    if k in r} for r in bench["matmul_ladder"]]
    for key in ("profile", "profile_fused"):
        if bench.get(key):
            record[key] = bench[key]
    if bench.get("peaks"):
        record["peaks"] = bench["peaks"]
        record["peak_tflops_fp32"] = bench["peaks"]["tflops_fp32"]
    return record


def _cell(value, width: int, fmt: str) -> str:
    """`value` right-aligned in `width` with `fmt`, or "-" when the record lacks it (null or absent)."""
    return f" {value:>{width}{fmt}}" if value is not None else f" {'-':>{width}}"


def step_table(report: SpeedReport) -> str:
    """The whole-step comparison as aligned text: ms per step each side, the ratio, GPU memory each side, and,
    when the record has them, the matmul each row used (numba: our default kernels, a version such as v5: that
    one of ours, cublas: `--matmul cublas`), the fused path's flash attention (`--flash`, beside its figures),
    the fused path's ms and its ratio to torch, which of our two paths is the default (the step `gpt2lab train`
    runs; records before 2026-11-26's second run lack it: the per-op path then), our launches and host ms."""
    steps = report.record["steps"]
    matmul = any("matmul" in s for s in steps)
    flash = any("flash" in s for s in steps)
    fused = any(s.get("fused_ms") is not None for s in steps)
    host = any(s.get("launches") is not None for s in steps)
    path = any("default_path" in s for s in steps)
    head = f"{'config':<7} {'B':>2} {'T':>5}" + (f" {'matmul':>6}" if matmul else "")
    head += f" {'ours ms':>9} {'torch ms':>9} {'ours/torch':>10}"
    head += f" {'flash':>5}" if flash else ""    # --flash: the fused path's, so beside its figures
    head += f" {'fused ms':>9} {'fused/torch':>11}" if fused else ""
    head += f" {'default':>7}" if path else ""
    head += f" {'ours MiB':>9} {'torch MiB':>9}" + (f" {'launches':>9} {'host ms':>8}" if host else "")
    lines = [head]
    for s in steps:
        line = f"{s['config']:<7} {s['B']:>2} {s['T']:>5}" + (_cell(s.get("matmul"), 6, "") if matmul else "")
        line += f" {s['ours_ms']:>9.1f} {s['torch_ms']:>9.1f} {s['ours_ms'] / s['torch_ms']:>10.2f}"
        line += _cell(s.get("flash"), 5, "") if flash else ""
        if fused:
            f_ms = s.get("fused_ms")
            line += _cell(f_ms, 9, ".1f") + _cell(None if f_ms is None else f_ms / s["torch_ms"], 11, ".2f")
        line += _cell(s.get("default_path"), 7, "") if path else ""
        line += _cell(s.get("ours_mib"), 9, ",.0f") + _cell(s.get("torch_mib"), 9, ",.0f")
        if host:
            line += _cell(s.get("launches"), 9, "") + _cell(s.get("host_ms"), 8, ".1f")
        lines.append(line)
    return "\n".join(lines)


# The goals of issue 14 a GPU record can be checked against: (what, config, B, T, matmul, the most ours/torch may
# be). The memory goal (GPU memory <= MEMORY_GOAL x torch's peak at every config) is checked over every step row.
STEP_GOALS = (("124M at B=4, T=1024: our step <= 1.5x torch", "gpt2", 4, 1024, "numba", 1.5),
              ("124M at B=4, T=1024 with --matmul cublas: <= 1.1x torch", "gpt2", 4, 1024, "cublas", 1.1),
              ("tiny at B=8, T=64: <= 1.0x torch", "tiny", 8, 64, "numba", 1.0))
MEMORY_GOAL = 1.2


def _where(s: dict) -> str:
    """A step row's place and its default path's matmul (a row without "matmul" ran ours: records before the
    field predate --matmul)."""
    return f"{s['config']} B={s['B']}, T={s['T']}, {s.get('matmul', 'numba')}"


def _group(s: dict) -> str:
    """"cublas" for a row on cuBLAS's matmuls, "numba" for one on ours, whichever version of them."""
    return "cublas" if s.get("matmul") == "cublas" else "numba"


def _candidate(s: dict) -> bool:
    """A row timed on a version of ours named with --matmul (e.g. v5): not the kernels the trainer runs."""
    return s.get("matmul", "numba") not in ("numba", "cublas")


def _default_fused(s: dict) -> bool:
    """Whether a step row's default path, the step `gpt2lab train` runs, is the fused one: bench says so in
    "default_path" (gpt2/choices.default_fused); rows before that field ran when the per-op path was the default."""
    return s.get("default_path") == "fused" and s.get("fused_ms") is not None


def _default_ms(s: dict) -> float:
    return s["fused_ms"] if _default_fused(s) else s["ours_ms"]


def _default_mib(s: dict):
    return s.get("fused_mib") if _default_fused(s) else s.get("ours_mib")


def _other_path(s: dict) -> str:
    """The ratio of the row's path that is not the default (the fused path's with its flash attention when
    --flash named one: it changes only that path), or "" when bench timed one path only."""
    if _default_fused(s):
        return f"per-op path {s['ours_ms'] / s['torch_ms']:.2f}x"
    if s.get("fused_ms") is None:
        return ""
    flash = f" (flash {s['flash']})" if "flash" in s else ""
    return f"fused path{flash} {s['fused_ms'] / s['torch_ms']:.2f}x"


def _with_other(text: str, s: dict, sep: str = "; ") -> str:
    other = _other_path(s)
    return f"{text}{sep}{other}" if other else text


def _step_goal(steps: list, goal: str, config: str, B: int, T: int, matmul: str, most: float) -> dict:
    """One goal row for the step of `config` at B, T on `matmul` ("numba": our default kernels; "cublas").
    Judged on the row's default path on the default kernels, the step `gpt2lab train` runs (the fused path on a
    GPU since 2026-11-26, the per-op path in older records: _default_fused); the other path's ratio is shown
    beside it, and so are other versions' (rows on a version of ours named with --matmul: a candidate, what the
    step would be if it became the default, or an older default timed again), never judged."""
    here = [s for s in steps if (s["config"], s["B"], s["T"]) == (config, B, T)]
    judged = [s for s in here if _group(s) == matmul and not _candidate(s)]
    candidates = [s for s in here if matmul == "numba" and _candidate(s)]
    shown = "; ".join(_with_other(f"--matmul {c['matmul']} {_default_ms(c) / c['torch_ms']:.2f}x", c, ", ")
                      for c in candidates)
    shown = f"; other versions of ours (not the defaults): {shown}" if candidates else ""
    if not judged:
        other = [f"{_where(s)}: {_default_ms(s) / s['torch_ms']:.2f}x" for s in steps
                 if s["config"] == config and _group(s) == matmul and not _candidate(s)]
        measured = "not measured" + (f" (measured only at {'; '.join(other)})" if other else "") + shown
        return {"goal": goal, "value": None, "measured": measured, "met": "unknown"}
    s = judged[-1]
    ratio = _default_ms(s) / s["torch_ms"]
    measured = _with_other(f"{ratio:.2f}x ({_default_ms(s):.1f} vs {s['torch_ms']:.1f} ms)", s)
    return {"goal": goal, "value": ratio, "measured": measured + shown, "met": "yes" if ratio <= most else "no"}


def _memory_goal(steps: list) -> dict:
    """GPU memory <= MEMORY_GOAL x torch's peak at every config: "no" when a row exceeds it, "unknown" when none
    does but a row lacks either side's memory, "yes" when every row has both and is within it."""
    goal = f"GPU memory <= {MEMORY_GOAL}x torch's peak at every config"
    rows = [(_default_mib(s) / s["torch_mib"], s) for s in steps
            if _default_mib(s) is not None and s.get("torch_mib")]
    unmeasured = [_where(s) for s in steps if _default_mib(s) is None or not s.get("torch_mib")]
    if not rows:
        return {"goal": goal, "value": None, "measured": "not measured", "met": "unknown"}
    worst, s = max(rows, key=lambda r: r[0])
    measured = f"worst {worst:.2f}x ({_where(s)}: {_default_mib(s):,.0f} vs {s['torch_mib']:,.0f} MiB)"
    if unmeasured:
        measured += f"; not measured at {'; '.join(unmeasured)}"
    met = "no" if worst > MEMORY_GOAL else ("unknown" if unmeasured else "yes")
    return {"goal": goal, "value": worst, "measured": measured, "met": met}


def goals(record: dict) -> list[dict]:
    """Issue 14's GPU goals checked against a record: one row per goal, {goal, value (ours/torch, None when the
    record lacks it), measured (the figure as text, or "not measured" and what was measured instead), met
    ("yes", "no" or "unknown")}. A step measured at another B or T is named, never taken for the goal's."""
    steps = record.get("steps") or []
    return [*(_step_goal(steps, *g) for g in STEP_GOALS), _memory_goal(steps)]


def goals_table(record: dict) -> str:
    """goals(record) as aligned text, headed by where and when the record was measured."""
    rows = goals(record)
    width = max(len(r["goal"]) for r in rows)
    lines = [f"issue 14's goals on {record.get('device', '?')}, {record.get('date', '?')}:",
             f"{'goal':<{width}}  {'met':<7}  measured"]
    lines += [f"{r['goal']:<{width}}  {r['met']:<7}  {r['measured']}" for r in rows]
    return "\n".join(lines)


def _title(report: SpeedReport, what: str) -> str:
    r = report.record
    return f"{what}\n{'measured now' if report.live else 'recorded'}: {r['device']}, {r['date']}"


def ops_figure(report: SpeedReport):
    """Grouped bars: each op's forward+backward time as ours / torch at the two recorded T (log scale)."""
    ratios = report.record["op_ratio"]
    T = ratios["T"]
    ops = [k for k in ratios if k not in ("T", "B")]
    # the full width: a dozen ops, two bars each
    fig, ax = plt.subplots(figsize=(FIGURE_MAX_WIDTH_IN, 3.8))
    x = np.arange(len(ops))
    width, step = 0.36, 0.48   # a gap between a pair's bars: their 9-pt labels ("0.47", "0.45") touched without
    for i, (t, colour) in enumerate(zip(T, HEAD_PALETTE)):
        vals = [ratios[op][i] for op in ops]
        have = [j for j, v in enumerate(vals) if v is not None]
        bars = ax.bar(x[have] + (i - (len(T) - 1) / 2) * step, [vals[j] for j in have], width, color=colour,
                      label=f"T = {t}")
        ax.bar_label(bars, fmt="%.2g", fontsize=9, padding=1)
    ax.axhline(1.0, color=OK_COLOR, lw=1.5, label="1 = as fast as torch")
    ax.set_yscale("log")
    ax.set_ylim(0.1, 30)   # recorded ratios went down to 0.14 (flash at T = 64, an H200, 2026-11-27)
    ax.set_xticks(x, ops, rotation=30, ha="right", rotation_mode="anchor", fontsize=9)
    ax.set_ylabel("ours / torch time (lower is faster)", fontsize=9)
    ax.legend(fontsize=9, loc="upper left")
    ax.set_title(_title(report, f"Each op, forward + backward, GPT-2 124M shapes, B={ratios['B']}"), fontsize=10)
    fig.tight_layout()
    return fig


def launch_figure(report: SpeedReport):
    """Horizontal bars: microseconds of host time per kernel launch, numba's ways and one PyTorch op."""
    costs = report.record.get("launch_us")
    if not costs:
        raise ValueError("launch_figure: this record has no launch costs")
    names = list(costs)
    fig, ax = plt.subplots(figsize=(FIGURE_MAX_WIDTH_IN * 0.85, 2.9))
    colours = [HEAD_PALETTE[1] if n.startswith("torch") else HEAD_PALETTE[0] for n in names]
    bars = ax.barh(names[::-1], [costs[n] for n in names][::-1], color=colours[::-1])
    ax.bar_label(bars, fmt="%.1f us", fontsize=9, padding=2)
    ax.set_xlim(0, max(costs.values()) * 1.2)
    ax.tick_params(labelsize=9)
    ax.set_xlabel("host time per launch (us)", fontsize=9)
    ax.set_title(_title(report, "What one kernel launch costs before the GPU does any work"), fontsize=10)
    fig.tight_layout()
    return fig


def rate_figure(report: SpeedReport):
    """Bars: TFLOP/s a GPT-2 124M step (B=4, T=1024) reaches, ours and torch, against the fp32 peak."""
    rates, peak = report.record.get("tflops"), report.record.get("peak_tflops_fp32")
    if not rates or not peak:
        raise ValueError("rate_figure: this record has no FLOP rates")
    fig, ax = plt.subplots(figsize=(FIGURE_MAX_WIDTH_IN * 0.6, 2.4))
    names, vals = ["ours (numba)", "torch (cuBLAS)"], [rates["ours"], rates["torch"]]
    bars = ax.barh(names[::-1], vals[::-1], color=[HEAD_PALETTE[1], HEAD_PALETTE[0]])
    ax.bar_label(bars, labels=[f"{v:.0f} TFLOP/s ({100 * v / peak:.0f}% of peak)" for v in vals[::-1]],
                 fontsize=9, padding=2)
    ax.axvline(peak, color="#555", ls="--", lw=1)
    ax.text(peak - 1, 0.5, f"fp32 peak {peak:.0f}", fontsize=9, ha="right", va="center", color="#555")
    ax.set_xlim(0, peak * 1.05)
    ax.tick_params(labelsize=9)
    ax.set_xlabel(f"TFLOP/s (a step is ~{rates['step_tflop']} TFLOP)", fontsize=9)
    ax.set_title(_title(report, "GPT-2 124M, B=4, T=1024: the FLOP rate reached"), fontsize=10)
    fig.tight_layout()
    return fig


def ladder_figure(report: SpeedReport):
    """Grouped bars: TFLOP/s of each matmul version at each of GPT-2's matmul shapes (forward + backward), the
    fp32 peak dashed when the record has one; the model's default version is marked ("the default then" in a
    record: it may have changed since). Raises ValueError when the record has no ladder."""
    rows = report.record.get("matmul_ladder")
    if not rows:
        raise ValueError("ladder_figure: no matmul ladder has been recorded on a GPU yet "
                         "(gpt2lab bench --device cuda --ladder records one)")
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    versions = list(dict.fromkeys(r["version"] for r in rows))
    rate = {(r["shape"], r["version"]): r["tflops"] for r in rows}
    fig, ax = plt.subplots(figsize=(FIGURE_MAX_WIDTH_IN * 0.85, 3.6))
    width = 0.8 / len(versions)
    for i, v in enumerate(versions):
        default = any(r["default"] for r in rows if r["version"] == v)
        ax.bar(np.arange(len(shapes)) + (i - (len(versions) - 1) / 2) * width,
               [rate.get((s, v), 0.0) for s in shapes], width, color=HEAD_PALETTE[i % len(HEAD_PALETTE)],
               label=v + (f" (the default{'' if report.live else ' then'})" if default else ""))
    peak = report.record.get("peak_tflops_fp32")
    if peak:
        ax.axhline(peak, color="#555", ls="--", lw=1, label=f"fp32 peak {peak:.0f}")
    ax.set_xticks(np.arange(len(shapes)), shapes, fontsize=9)
    ax.tick_params(labelsize=9)
    ax.set_ylabel("TFLOP/s (forward + backward)", fontsize=9)
    ax.legend(fontsize=9, ncols=2)
    ax.set_title(_title(report, "The matmul version ladder at GPT-2 124M's shapes (B*T = 4096)"), fontsize=10)
    fig.tight_layout()
    return fig


TOP_KERNELS = 12   # profile_figure's bars: the slowest kernels, then "other" and the idle gaps


def _calls(n: int) -> str:
    return f"{n} call" + ("" if n == 1 else "s")


def _profile_bars(profile: dict, top: int) -> list[tuple[str, float, str]]:
    """(label, % of the step, kind) per bar: the `top` slowest kernels, the rest as one "other", the idle gaps."""
    from gpt2lab.kernels.profile import split_rows
    kernels, rest, idle = split_rows(profile, top)
    bars = [(f"{r['kernel']} ({_calls(r['calls'])})", r["pct"], "kernel") for r in kernels]
    if rest:
        bars.append((f"other ({len(rest)} kernels, {_calls(sum(r['calls'] for r in rest))})",
                     sum(r["pct"] for r in rest), "other"))
    bars += [("GPU idle between our kernels", r["pct"], "idle") for r in idle]
    return bars


def profile_figure(report: SpeedReport, top: int = TOP_KERNELS, fused: bool = False):
    """Horizontal bars: each kernel's share of one training step's GPU time (calls in brackets), the `top`
    slowest, the rest as "other", and the time the GPU sat idle between our launches; fused: the fused path's
    step ("profile_fused"), else the per-op path's. Raises ValueError when the record has no such profile."""
    profile = report.record.get("profile_fused" if fused else "profile")
    if not profile:
        raise ValueError(f"profile_figure: no per-kernel profile{' of the fused path' if fused else ''} has been "
                         f"recorded on a GPU yet (gpt2lab bench --device cuda --profile records one)")
    bars = _profile_bars(profile, top)
    colour = {"kernel": HEAD_PALETTE[0], "other": "#6b6b6b", "idle": HEAD_PALETTE[1]}
    fig, ax = plt.subplots(figsize=(FIGURE_MAX_WIDTH_IN * 0.85, 0.9 + 0.3 * len(bars)))
    y = np.arange(len(bars))[::-1]
    drawn = ax.barh(y, [b[1] for b in bars], color=[colour[b[2]] for b in bars])
    ax.bar_label(drawn, labels=[f"{b[1]:.1f}%" for b in bars], fontsize=9, padding=2)
    ax.set_yticks(y, [b[0] for b in bars], fontsize=9)
    ax.set_xlim(0, max(b[1] for b in bars) * 1.18 + 1)
    ax.tick_params(labelsize=9)
    clock = "" if profile["clock"].startswith("cuda events") else f"; clock: {profile['clock']}"
    ax.set_xlabel(f"% of the step's {profile['step_ms']:.1f} ms on the GPU ({profile['launches']} launches"
                  f"{clock})", fontsize=9)
    where = f"{profile.get('config', '?')}, B={profile.get('B', '?')}, T={profile.get('T', '?')}" + \
        (", fused path" if fused else "")
    ax.set_title(_title(report, f"Where one training step's GPU time goes ({where})"), fontsize=10)
    fig.tight_layout()
    return fig


def op_rate_figure(report: SpeedReport, T: int | None = None):
    """Paired horizontal bars per op at sequence length T (default: the longest recorded): the memory
    bandwidth and the fp32 FLOP rate ours reached, each as a % of the GPU's data-sheet peak. A memory-bound op
    is near the top on the first, the matmuls on the second. Raises ValueError without rates or peaks."""
    rates, peaks = report.record.get("op_rates"), report.record.get("peaks")
    if not rates:
        raise ValueError("op_rate_figure: no per-op rates have been recorded on a GPU yet "
                         "(gpt2lab bench --device cuda records them)")
    if not peaks:
        raise ValueError(f"op_rate_figure: no data-sheet peaks for {report.record['device']} "
                         f"(add it to gpt2lab.kernels.bench.DEVICE_PEAKS)")
    T = T if T is not None else max(r["T"] for r in rates)
    rows = [r for r in rates if r["T"] == T]
    if not rows:
        raise ValueError(f"op_rate_figure: T={T} has no recorded rates; recorded: "
                         f"{sorted({r['T'] for r in rates})}")
    mem = [100 * r["gbytes_s"] / peaks["gbytes_s"] for r in rows]
    flop = [100 * r["tflops"] / peaks["tflops_fp32"] for r in rows]
    # constrained layout: the legend goes below the axes, where no bar or label can be under it
    fig, ax = plt.subplots(figsize=(FIGURE_MAX_WIDTH_IN * 0.85, 1.6 + 0.55 * len(rows)), layout="constrained")
    y, h = np.arange(len(rows))[::-1], 0.38
    for offset, vals, colour, label in ((h / 2, mem, HEAD_PALETTE[0], f"memory ({peaks['gbytes_s']:.0f} GB/s peak)"),
                                        (-h / 2, flop, HEAD_PALETTE[1],
                                         f"fp32 FLOP/s ({peaks['tflops_fp32']:.1f} TFLOP/s peak)")):
        bars = ax.barh(y + offset, vals, h, color=colour, label=label)
        ax.bar_label(bars, labels=[f"{v:.1f}%" for v in vals], fontsize=9, padding=2)
    ax.set_yticks(y, [r["op"] for r in rows], fontsize=9)
    ax.set_xlim(0, max(100.0, max(mem + flop) * 1.15))
    ax.tick_params(labelsize=9)
    ax.set_xlabel(f"% of the {peaks['name']}'s peak ({peaks['source']})", fontsize=9)
    fig.legend(fontsize=9, loc="outside lower center", ncols=2)
    ax.set_title(_title(report, f"What each op reaches of the GPU, forward + backward, B={rows[0].get('B', '?')}, "
                                f"T={T}"), fontsize=10)
    return fig


__all__ = ["SpeedReport", "gpu_available", "speed_report", "measure_now", "step_table", "ops_figure",
           "launch_figure",
           "rate_figure", "ladder_figure", "profile_figure", "op_rate_figure", "record_from_bench", "goals",
           "goals_table"]
