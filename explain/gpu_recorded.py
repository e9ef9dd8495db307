"""GPU figures recorded on a real GPU, kept as data so a lesson can show them on a machine without one.

Each record says where and when it was measured and on what code. Nothing here is computed: a new run on a
GPU (`bash tools/gpu_checks.sh run`, or `gpt2lab bench --device cuda --profile --json` turned into a record by
gpu_speed.record_from_bench) adds a record; the lesson shows the newest one and says which. docs/figures.md
has the same figures as tables.

The records are JSON files in gpu_records/ beside this module, one per run, named <device>_<date>.json, and
shipped with the package. Adding a GPU run is copying its record there:

    cp $OUT/record.json explain/gpu_records/h100_2027-01-15.json

then `make setup` (the install links each data file: a new one is not importable until it runs again) and
`pytest tests/test_gpu_recorded.py`, which checks every file with `check_record`. A record is never edited
by hand, and never completed with figures from another run.

What a record holds (gpu_records/README.md says the same, beside the files):
    device, date, software, code   where (the GPU), when (YYYY-MM-DD), on what (versions) and which code
    steps       one training step (forward, backward, AdamW) per config, ours and torch, same init and
                batches: config, B, T, ours_ms, torch_ms; ours_mib = the GPU memory in use after our step,
                torch_mib = torch's peak allocated (null: not measured); newer records also launches (our
                kernel launches per step) and host_ms (our host time per step), the same of the fused path
                (fused_ms, fused_mib, fused_launches, fused_host_ms: KernelGPT2(fused=True)), and matmul
                ("numba": our default matmul kernels, a version such as "v5": that one of ours, `--matmul v5`,
                "cublas": `--matmul cublas`) and flash (the fused path's flash attention when `--flash` named
                one: "v4" or "v5"), default_path ("fused" or "per-op": the one `gpt2lab train` took then, bench's
                "default_path"; a row without it: "per-op"); buffers_mib, fused_buffers_mib: the
                part of ours_mib, fused_mib that is our flat buffers (the rest: kernel scratch, CUDA modules)
    op_ratio    `gpt2lab bench --device cuda`: forward + backward of each op at GPT-2 124M's shapes, ours /
                torch: "T" the sequence lengths, "B" the batch, then per op one ratio per T (null: measured
                at one T only, e.g. AdamW, which does not depend on T)
Optional, each drawn by lesson 6 only when present:
    launch_us   host microseconds per kernel launch (a 1024-element kernel, mean of 5000 launches), by way
                of launching
    tflops      GPT-2 124M at B=4, T=1024: step_tflop (FLOP of one step, forward + backward), and the
                TFLOP/s torch and ours reached
    peak_tflops_fp32   the GPU's fp32 peak from NVIDIA's data sheet (not measured)
    matmul_ladder      TFLOP/s of each matmul version at GPT-2's matmul shapes (`bench --ladder`); newer
                       records also "parts": each product's ms, timed on its own (forward, dinp, dweight)
    profile, profile_fused   each kernel's share of one step's GPU time (`bench --profile`)
    op_rates, peaks    each op's achieved GB/s and TFLOP/s, and the GPU's data-sheet peaks
The H100 record of 2026-11-26 predates the profile, the per-op rates and the matmul ladder: it has none of
them, and none may be added by hand.
"""
from __future__ import annotations

import json
import numbers
import re
from importlib import resources

from gpt2lab.gpt2.choices import FLASHES, MATMULS, PATHS

FOLDER = "gpu_records"   # beside this module, shipped as package data (pyproject.toml)


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _optional_number(value) -> bool:
    return value is None or _number(value)


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value) -> bool:
    return isinstance(value, str) and bool(value)


def _bool(value) -> bool:
    return isinstance(value, bool)


def _date(value) -> bool:
    return isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\d", value) is not None


def _what(test) -> str:
    """What a value passing `test` is, for an error message."""
    return {_number: "a number", _optional_number: "a number or null", _int: "an integer", _bool: "true or false",
            _text: "a non-empty string", _date: "a date YYYY-MM-DD", _optional_int: "an integer or null",
            _matmul: f"one of {', '.join(MATMULS)}", _flash: f"one of {', '.join(FLASHES)}",
            _path: f"one of {', '.join(PATHS)}"}.get(
        test, "a value of another kind")


def _expect(ok: bool, where: str, what: str, value) -> None:
    if not ok:
        raise ValueError(f"{where}: expected {what}, got {value!r}")


def _fields(row, fields: dict, where: str) -> None:
    """ValueError unless `row` is an object whose every field passes its test."""
    _expect(isinstance(row, dict), where, "an object", row)
    for name, test in fields.items():
        if name not in row:
            raise ValueError(f"{where}: no {name!r}")
        _expect(test(row[name]), f"{where}.{name}", _what(test), row[name])


def _rows(fields: dict):
    """The check of a non-empty list of objects with `fields`."""
    def check(value, where):
        _expect(isinstance(value, list) and bool(value), where, "a non-empty list", value)
        for i, row in enumerate(value):
            _fields(row, fields, f"{where}[{i}]")
    return check


def _object(fields: dict):
    return lambda value, where: _fields(value, fields, where)


def _scalar(test):
    return lambda value, where: _expect(test(value), where, _what(test), value)


def _op_ratio(ratio, where: str) -> None:
    _fields(ratio, {"T": lambda v: isinstance(v, list) and bool(v) and all(map(_int, v)), "B": _int}, where)
    for op, values in ratio.items():
        if op not in ("T", "B"):
            _expect(isinstance(values, list) and len(values) == len(ratio["T"]) and all(map(_optional_number, values)),
                    f"{where}.{op}", f"one ratio (or null) per T {ratio['T']}", values)


def _launch_us(costs, where: str) -> None:
    _expect(isinstance(costs, dict) and bool(costs), where, "an object: way of launching -> us", costs)
    _fields(costs, {name: _number for name in costs}, where)


def _ladder(rows, where: str) -> None:
    """The ladder's rows, and each one's "parts" (its products' ms) where a newer record has them."""
    _rows({"shape": _text, "version": _text, "ms": _number, "tflops": _number, "default": _bool})(rows, where)
    for i, row in enumerate(rows):
        if "parts" in row:
            _expect(isinstance(row["parts"], dict) and bool(row["parts"]), f"{where}[{i}].parts",
                    "an object: product -> ms", row["parts"])
            _fields(row["parts"], {name: _number for name in row["parts"]}, f"{where}[{i}].parts")


def _profile(profile, where: str) -> None:
    _fields(profile, {"clock": _text, "launches": _int, "step_ms": _number}, where)
    _rows({"kernel": _text, "calls": _int, "ms": _number, "pct": _number})(profile.get("rows"), f"{where}.rows")


# a step row's "matmul": our default kernels ("numba"), one of our versions by name, or cuBLAS (`--matmul`,
# gpt2/choices.py); its "flash": the fused path's flash attention version (`--flash`), when not the default


def _optional_int(value) -> bool:
    return value is None or _int(value)


def _matmul(value) -> bool:
    return value in MATMULS


def _flash(value) -> bool:
    return value in FLASHES


def _path(value) -> bool:
    return value in PATHS


# A step row's fields a record may lack (the H100 record of 2026-11-26 has only the memory), each checked when
# present: gpu_speed.step_table and gpu_speed.goals read them.
STEP_OPTIONAL = {"ours_mib": _optional_number, "torch_mib": _optional_number, "launches": _optional_int,
                 "host_ms": _optional_number, "fused_ms": _number, "fused_mib": _optional_number,
                 "fused_launches": _optional_int, "fused_host_ms": _optional_number, "matmul": _matmul, "flash": _flash,
                 "buffers_mib": _optional_number, "fused_buffers_mib": _optional_number,
                 "default_path": _path}


def _steps(value, where: str) -> None:
    _rows({"config": _text, "B": _int, "T": _int, "ours_ms": _number, "torch_ms": _number})(value, where)
    for i, row in enumerate(value):
        _fields(row, {k: test for k, test in STEP_OPTIONAL.items() if k in row}, f"{where}[{i}]")


# What explain/gpu_speed.py reads of each section: lesson 6 draws the REQUIRED ones always, an OPTIONAL one
# only when the record has it (and tests/test_gpu_recorded.py checks every record file against both).
REQUIRED = {
    "device": _scalar(_text), "date": _scalar(_date), "software": _scalar(_text), "code": _scalar(_text),
    "steps": _steps,
    "op_ratio": _op_ratio,
}
OPTIONAL = {
    "launch_us": _launch_us,
    "tflops": _object({"step_tflop": _number, "torch": _number, "ours": _number}),
    "peak_tflops_fp32": _scalar(_number),
    "matmul_ladder": _ladder,
    "profile": _profile,
    "profile_fused": _profile,
    "op_rates": _rows({"op": _text, "T": _int, "gbytes_s": _number, "tflops": _number}),
    "peaks": _object({"name": _text, "tflops_fp32": _number, "gbytes_s": _number, "source": _text}),
}


def check_record(record, name: str = "record") -> None:
    """ValueError in one line, naming `name` and the field, unless `record` has every REQUIRED section and each
    OPTIONAL one it has is of the shape gpu_speed draws from (rate_figure needs peak_tflops_fp32 with tflops)."""
    if not isinstance(record, dict):
        raise ValueError(f"{name}: expected a JSON object, got {type(record).__name__}")
    for key, check in REQUIRED.items():
        if key not in record:
            raise ValueError(f"{name}: no {key!r} (every record needs {', '.join(REQUIRED)})")
        check(record[key], f"{name}: {key}")
    for key, check in OPTIONAL.items():
        if key in record:
            check(record[key], f"{name}: {key}")
    if "tflops" in record and "peak_tflops_fp32" not in record:
        raise ValueError(f"{name}: 'tflops' without 'peak_tflops_fp32' (the rate figure draws one against the other)")


def load_records(folder=None) -> list[dict]:
    """Every *.json record in `folder` (default: gpu_records/ of the installed package), checked, oldest first
    (by date, then file name)."""
    folder = folder if folder is not None else resources.files(__package__).joinpath(FOLDER)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder; the package was installed without its GPU records "
                         f"(in a checkout: make setup)")
    records = []
    for path in sorted((p for p in folder.iterdir() if p.name.endswith(".json")), key=lambda p: p.name):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{FOLDER}/{path.name}: not JSON ({e})") from None
        check_record(record, f"{FOLDER}/{path.name}")
        records.append(record)
    if not records:
        raise ValueError(f"{folder}: no GPU record (*.json) in it; the package was installed without them "
                         f"(in a checkout: make setup)")
    return sorted(records, key=lambda r: r["date"])   # stable: the same date keeps file-name order


RECORDS = load_records()


def latest() -> dict:
    """The newest record."""
    return RECORDS[-1]
