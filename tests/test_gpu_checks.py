"""tools/gpu_checks.sh, checked without a GPU: a borrowed GPU has 15 minutes in all, and a typo'd flag or a
bench JSON the record step cannot read would waste them.

The `run` branch's command lines are read from the script's text (backslash continuations joined, `timeout N`
taken off, "$out" and the other shell variables replaced) and each is parsed by the real argument parser of
the command it calls; the gpt2lab ones are also run here up to their "no GPU" refusal, so every check made
before the GPU is reached passes too. Then the time limits, the files the record step reads, and the record
step itself on bench JSON of the shape `gpt2lab bench --device cuda --json` writes.
"""
import ast
import contextlib
import io
import json
import pathlib
import re
import shlex

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "gpu_checks.sh"
ENV = ROOT / "tools" / "gpu_env.sh"   # what every script's run branch sources first
DEVICE_CALL_S = 600   # one device call; the limits must leave room for the wheel install and the record step
LIMITS_S = 565   # each step's limit plus its 5 s to stop
SHELL_VARS = {"device": "NVIDIA H100 80GB HBM3", "software": "numba 0.68, numba-cuda 0.30.4, torch 2.11"}
REDIRECT = re.compile(r"^\d*>|^<|^&>|^\|")   # the first token of `> file`, `2> file`, `2>&1`, `| tee ...`


def run_branch(text: str) -> list[str]:
    """The logical lines (backslash continuations joined) of the script's `run)` branch, up to its `;;`."""
    body = text.split("\nrun)\n", 1)[1].split(";;", 1)[0]
    return [line.strip() for line in body.replace("\\\n", "").splitlines() if line.strip()]


def _expand(token: str, out: str, assigned: dict) -> str:
    """A shell word with its variables replaced: "$out" by `out`, $device and $software by plausible values,
    the ones the script assigns a quoted word (assigned) by that word, $(...) by a fixed word. An unknown
    variable fails (KeyError names it): the script sets no other."""
    token = re.sub(r"\$\(.*\)", "0123abc", token)
    values = dict(SHELL_VARS, out=out, **assigned)
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], token)


@pytest.fixture(scope="module")
def script_text() -> str:
    return SCRIPT.read_text()


def commands(text: str, out: str) -> list[dict]:
    """Each gpt2lab command of the run branch: {line, limit (the most it can take: `timeout [-k S] N` stops it at
    N s and kills it S s later, so N + S; None without), kind ("gpt2lab" or the module of `python3 -m`), argv,
    stdout (the file its stdout goes to, or None)}. pip and python3 -c are left out."""
    assigned = dict(re.findall(r"^\s*(\w+)='([^']*)'$", text, flags=re.M))   # e.g. shape='{...}'
    found = []
    for line in run_branch(text):
        words = shlex.split(line)
        limit = None
        if words[:1] == ["timeout"]:
            grace, words = (int(words[2]), words[3:]) if words[1] == "-k" else (0, words[1:])
            limit, words = int(words[0]) + grace, words[1:]
        if words[:1] == ["env"]:   # `env NAME=VALUE ... command`
            words = words[1:]
            while re.match(r"^\w+=", words[0]):
                words = words[1:]
        if words[:1] == ["compute-sanitizer"]:   # `compute-sanitizer --option VALUE ...` runs the command after it
            options = {}
            words = words[1:]
            while words[0].startswith("--"):
                options[words[0]], words = words[1], words[2:]
            assert options.get("--tool") in ("memcheck", "racecheck"), line
            assert "--error-exitcode" in options, f"a sanitizer that finds errors must fail the step: {line}"
        if words[:1] == ["gpt2lab"]:
            kind, start = "gpt2lab", 1
        elif words[:2] == ["python3", "-m"] and words[2].startswith("gpt2lab."):
            kind, start = words[2], 3
        else:
            continue
        cut = next((i for i, w in enumerate(words) if REDIRECT.match(w)), len(words))
        argv, rest = [_expand(w, out, assigned) for w in words[start:cut]], words[cut:]
        stdout = next((_expand(rest[i + 1], out, assigned) for i, w in enumerate(rest[:-1]) if w == ">"), None)
        found.append({"line": line, "limit": limit, "kind": kind, "argv": argv, "stdout": stdout})
    return found


def _parsers():
    from gpt2lab.explain import gpu_speed_cli
    from gpt2lab.gpt2 import host_profile_cli
    from gpt2lab.kernels import accuracy_cli
    return {"gpt2lab.kernels.accuracy": accuracy_cli.build_parser,
            "gpt2lab.explain.gpu_speed_cli": gpu_speed_cli.build_parser,
            "gpt2lab.gpt2.host_profile_cli": host_profile_cli.build_parser}


def parse(command: dict):
    """The argparse Namespace of one command line, by the parser its program uses; AssertionError with
    argparse's own message when it rejects the line."""
    from gpt2lab.gpt2 import cli
    if command["kind"] == "gpt2lab":
        parser = cli.build_parser(command["argv"][0])[0]
    else:
        parsers = _parsers()
        assert command["kind"] in parsers, f"no parser known for python3 -m {command['kind']}: {command['line']}"
        parser = parsers[command["kind"]]()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser.parse_args(command["argv"])
    except SystemExit:
        raise AssertionError(f"{command['line']}\n  {err.getvalue().strip()}") from None


# ---- every command line parses

def functions_under_timeout(text: str) -> list[str]:
    """The shell functions the run branch defines and then runs under `timeout`, which cannot run them (it
    execs a program: "failed to run command", exit 127, every time)."""
    lines = run_branch(text)
    defined = {m.group(1) for line in lines for m in [re.match(r"(\w+)\s*\(\)\s*\{", line)] if m}
    run = re.compile(r"timeout (?:-k \d+ )?\d+ (\w+)")
    return [line for line in lines if run.match(line) and run.match(line).group(1) in defined]


def test_no_shell_function_runs_under_timeout(script_text):
    assert functions_under_timeout(script_text) == []
    source = '    source tools/gpu_env.sh'
    as_a_function = script_text.replace(source, '    gpt2lab() { python3 -m gpt2lab.gpt2.cli "$@"; }\n' + source, 1)
    assert len(functions_under_timeout(as_a_function)) == 7   # two verify, four bench, one train


def test_the_gpt2lab_on_path_runs_under_timeout(script_text, tmp_path):
    """tools/gpu_env.sh's lines from `bin=` to `export PATH=` (bin in tmp_path), then `timeout 60 gpt2lab --help`
    with this venv's python3 first on PATH: the program the GPU steps call, called as they call it."""
    import os
    import subprocess
    import sys
    assert "    source tools/gpu_env.sh" in script_text
    lines = [line.strip() for line in ENV.read_text().splitlines() if line.strip() and not line.startswith("#")]
    start = next(i for i, line in enumerate(lines) if line.startswith("bin="))
    end = next(i for i, line in enumerate(lines) if line.startswith("export PATH="))
    setup = [re.sub(r"^bin=\S+;", f"bin={shlex.quote(str(tmp_path))};", lines[start]), *lines[start + 1:end + 1]]
    env = dict(os.environ, PATH=f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(["bash", "-c", "\n".join([*setup, "timeout 60 gpt2lab --help"])], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "train" in proc.stdout and (tmp_path / "gpt2lab").is_file()
    # a user error (here: no such checkpoint) ends in one line and exit 2, as with the installed gpt2lab: a
    # traceback (exit 1) would hide, e.g., train's one-line refusal of a --batch the GPU cannot hold
    missing = tmp_path / "none.pt"
    proc = subprocess.run(["bash", "-c", "\n".join([*setup, f"timeout 60 gpt2lab generate --ckpt {missing}"])],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == f"gpt2lab generate: error: no such checkpoint: " \
                                                          f"'{missing}'", proc.stderr[-2000:]


def test_every_command_line_of_the_run_branch_parses(script_text, tmp_path):
    found = commands(script_text, str(tmp_path))
    kinds = sorted({c["kind"] if c["kind"] != "gpt2lab" else c["argv"][0] for c in found})
    assert kinds == ["bench", "gpt2lab.explain.gpu_speed_cli", "gpt2lab.kernels.accuracy", "train", "verify"]
    for command in found:
        parse(command)


@pytest.mark.parametrize("good, bad", [("--verify-every 2", "--verify-evry 2"), ("--no-ladder", "--no-laddr"),
                                       ("--device cuda > ", "--device gpu > "),
                                       ("gpt2lab.kernels.accuracy", "gpt2lab.kernels.acuracy"),
                                       ('--software "$software"', '--sofware "$software"')])
def test_a_misspelled_flag_fails_the_check(script_text, tmp_path, good, bad):
    assert good in script_text
    broken = script_text.replace(good, bad, 1)
    with pytest.raises(AssertionError, match=re.escape(bad.split()[0].strip('"'))):
        for command in commands(broken, str(tmp_path)):
            parse(command)


def _no_gpu_here() -> bool:
    from numba import config, cuda
    return not config.ENABLE_CUDASIM and not cuda.is_available()


def test_the_gpt2lab_commands_pass_every_check_made_before_the_gpu(script_text, tmp_path, capsys):
    """`gpt2lab train/bench/verify --device cuda` here: each refuses in one line for want of a GPU (exit 2), so
    what they check first (the config, --seq against its context, --profile with --steps) has passed."""
    if not _no_gpu_here():
        pytest.skip("a GPU (or the simulator) is here: the commands would run for real")
    from gpt2lab.gpt2 import cli
    for command in commands(script_text, str(tmp_path)):
        if command["kind"] != "gpt2lab":
            continue
        assert cli.main(command["argv"]) == 2, command["line"]
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "GPU" in err, f"{command['line']}\n  {err}"


def test_an_argument_wrong_for_the_model_fails_before_the_gpu(script_text, tmp_path, capsys):
    if not _no_gpu_here():
        pytest.skip("a GPU (or the simulator) is here: the commands would run for real")
    from gpt2lab.gpt2 import cli
    broken = script_text.replace("--config gpt2 --steps 3 --batch 4 --seq 1024",
                                 "--config small --steps 3 --batch 4 --seq 1024", 1)
    train = [c for c in commands(broken, str(tmp_path)) if c["argv"][:1] == ["train"]][-1]
    assert cli.main(train["argv"]) == 2
    assert "--seq 1024 is longer than the small model's context" in capsys.readouterr().err


def test_the_default_matmul_is_checked_bit_for_bit_against_the_version_it_rewrites(script_text, tmp_path):
    """v8 is v7's sums in fewer instructions; the simulator has no fused multiply-add, so the script's second
    verify is the only check that ptxas kept v7's bits, and it must name the default."""
    from gpt2lab.kernels import matmul
    verify = [parse(c) for c in commands(script_text, str(tmp_path)) if c["argv"][:1] == ["verify"]]
    assert [(a.op, a.version, a.same_as) for a in verify] == [
        (None, None, None), (["matmul"], matmul.DEFAULT_VERSION["cuda"], "v7")]
    broken = script_text.replace("--version v8 --same-as v7", "--version v8", 1)
    assert broken != script_text
    verify = [parse(c) for c in commands(broken, str(tmp_path)) if c["argv"][:1] == ["verify"]]
    assert verify[1].same_as is None


# ---- the time limits and the files

def test_the_limits_fit_one_device_call(script_text, tmp_path):
    found = commands(script_text, str(tmp_path))
    on_gpu = [c for c in found if "cuda" in c["argv"]]
    assert on_gpu and all(c["limit"] for c in on_gpu), [c["line"] for c in on_gpu if not c["limit"]]
    # a step that overruns its limit while stopping gently (train saving its checkpoint) is killed
    assert all(c["line"].lstrip().startswith("timeout -k ") for c in on_gpu), [c["line"] for c in on_gpu]
    total = sum(c["limit"] for c in found if c["limit"])
    assert total <= LIMITS_S < DEVICE_CALL_S, f"the time limits add up to {total} s"
    # the header says what each step may take: it must agree with the commands
    assert f"add up to {total} s" in script_text


def test_the_limits_check_can_fail(script_text, tmp_path):
    broken = script_text.replace("timeout -k 5 110 gpt2lab verify", "timeout -k 5 210 gpt2lab verify", 1)
    with pytest.raises(AssertionError, match="add up to 665 s"):
        test_the_limits_fit_one_device_call(broken, tmp_path)


def _record_inputs(found):
    record = [c for c in found if c["kind"] == "gpt2lab.explain.gpu_speed_cli"]
    assert len(record) == 1
    return record[0], parse(record[0]).bench


def test_every_file_the_record_step_reads_is_written_by_an_earlier_bench(script_text, tmp_path):
    found = commands(script_text, str(tmp_path))
    record, inputs = _record_inputs(found)
    earlier = found[:found.index(record)]
    writers = {c["stdout"]: c for c in earlier if c["stdout"]}
    for path in inputs:
        assert path in writers, f"the record step reads {path}, which no earlier step writes"
        assert writers[path]["argv"][0] == "bench" and "--json" in writers[path]["argv"], writers[path]["line"]
    assert record["stdout"] == f"{tmp_path}/record.json"
    assert {f"{tmp_path}/{name}_cuda.json" for name in ("steps", "steps1024", "cublas1024", "ops")} \
        == set(inputs)
    broken = script_text.replace('"$out"/ops_cuda.json --device', '"$out"/op_cuda.json --device', 1)
    _, inputs = _record_inputs(commands(broken, str(tmp_path)))
    assert f"{tmp_path}/op_cuda.json" in inputs and f"{tmp_path}/op_cuda.json" not in writers


# ---- the record step, on bench JSON of the cuda shape

# The keys record_from_bench reads from a step row of `gpt2lab bench --device cuda` (s["..."] and s.get("...")).
STEP_KEYS = {"config", "B", "T", "ours_ms", "torch_ms", "ours_gpu_mib", "torch_peak_mib", "launches_per_step",
             "ours_host_ms", "fused_ms", "fused_gpu_mib", "fused_launches_per_step", "fused_host_ms", "ours_buffers_mib",
             "fused_buffers_mib", "default_path"}


def _step_row(config, B, T):
    return {"config": config, "B": B, "T": T, "ours_ms": 20.0 * T / 64, "torch_ms": 10.0 * T / 64,
            "ours_gpu_mib": 900.0, "torch_peak_mib": 500.0, "launches_per_step": 300, "ours_host_ms": 4.0,
            "fused_ms": 16.0 * T / 64, "fused_gpu_mib": 800.0, "fused_launches_per_step": 150, "fused_host_ms": 2.0,
            "ours_buffers_mib": 850.0, "fused_buffers_mib": 600.0, "default_path": "fused"}


def keys_written(path: pathlib.Path, functions: tuple) -> set:
    """The string keys the named functions of a module put in dicts: {"k": ...} and row["k"] = ..."""
    written = set()
    for fn in ast.walk(ast.parse(path.read_text())):
        if isinstance(fn, ast.FunctionDef) and fn.name in functions:
            for node in ast.walk(fn):
                if isinstance(node, ast.Dict):
                    written |= {k.value for k in node.keys if isinstance(k, ast.Constant)}
                elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store):
                    written |= {node.slice.value} if isinstance(node.slice, ast.Constant) else set()
    return written


# The keys record_from_bench reads of each kind of bench row, and where bench writes them.
ROW_KEYS = {"steps": (STEP_KEYS, "gpt2/bench.py", ("bench_steps_cuda", "_ours_cuda", "_torch_cuda")),
            "ops": ({"op", "shape", "ratio", "ours_ms", "gbytes_s", "tflops"}, "kernels/bench.py", ("bench_ops",)),
            "matmul_ladder": ({"shape", "version", "ms", "tflops", "default", "parts"}, "kernels/bench.py",
                              ("bench_matmul_ladder",))}
ROWS = {"steps": _step_row("gpt2", 4, 64),
        "ops": {"op": "gelu", "shape": "B=4,T=64", "ratio": 2.0, "ours_ms": 1.0, "gbytes_s": 900.0, "tflops": 0.1},
        "matmul_ladder": {"shape": "c_fc", "version": "v3", "ms": 1.0, "tflops": 10.0, "default": True,
                          "parts": {"forward": 0.3, "dinp": 0.3, "dweight": 0.4}}}


@pytest.mark.parametrize("kind", list(ROW_KEYS))
def test_the_keys_the_record_reads_are_the_ones_the_cuda_bench_writes(kind):
    """record_from_bench reads the optional fields of a bench row with .get: a key renamed in bench would
    silently become null (or a section missing) in every record. So: a row of exactly the keys it reads gives
    a record section with no null, and those keys are among the ones bench's functions put in a row."""
    from gpt2lab.explain.gpu_speed import record_from_bench
    keys, module, functions = ROW_KEYS[kind]
    assert set(ROWS[kind]) == keys
    record = record_from_bench({kind: [ROWS[kind]], "matmul": "numba"}, "x", "d", "s", "c")
    section = {"steps": "steps", "ops": "op_rates", "matmul_ladder": "matmul_ladder"}[kind]
    assert None not in record[section][0].values()
    if kind == "steps":   # the fused path's figures and the matmul: what the next session picks defaults from
        assert {"fused_ms", "fused_mib", "fused_launches", "fused_host_ms", "matmul", "buffers_mib",
                "fused_buffers_mib", "default_path"} <= set(record["steps"][0])
    written = keys_written(ROOT / module, functions)
    assert keys <= written, keys - written
    assert "ours_gpu_mb" not in written   # the check can fail: a name bench does not write is not there


def _into(rows, new):
    """What the measuring functions do with rows=: append each new row to the caller's list."""
    if rows is None:
        return new
    rows.extend(new)
    return rows


def _fake_measurements(monkeypatch):
    """bench_cli's measuring functions replaced by rows of the shapes they return on a GPU (numbers made up),
    and numba and torch told a GPU is here: what is left is bench_cli's own logic of which keys its JSON has."""
    import numba.cuda
    import torch

    from gpt2lab.gpt2 import bench, bench_cli

    def ops(device, op, reps, progress, matmul_version=None, rows=None):
        return _into(rows, [{"op": name, "shape": f"B=4,T={T}", "device": device, "ours_ms": 1.0, "torch_ms": 0.5,
                 "ratio": 2.0, "bytes": 10**9, "flops": 10**9, "gbytes_s": 1000.0, "tflops": 1.0}
                for name in ("gelu", "matmul") for T in (64, 256)])

    def ladder(device, reps, progress, rows=None, versions=None):
        return _into(rows, [{"shape": "c_fc", "N": 4096, "C": 768, "OC": 3072, "device": device, "version": v, "ms": 1.0,
                 "tflops": 10.0, "pct_of_reference": 50.0, "reference": "cublas", "default": v == "v3"}
                for v in versions or ("v1", "v3", "cublas")])

    def steps(device, configs, B, T, reps, progress, kernels=None, rows=None):
        return _into(rows, [_step_row(c, B, T) for c in configs])

    def profile(config, B, T, progress, kernels=None, fused=False):
        return {"config": config, "B": B, "T": T, "fused": fused, "clock": "cuda events (GPU time)",
                "launches": 2, "step_ms": 3.0, "wall_ms": 3.5, "launch_count": 2,
                "rows": [{"kernel": "matmul_forward_v3", "calls": 2, "ms": 3.0, "pct": 100.0}]}
    monkeypatch.setattr(bench_cli, "bench_ops", ops)
    monkeypatch.setattr(bench_cli, "bench_matmul_ladder", ladder)
    monkeypatch.setattr(bench_cli, "gpu_name", lambda: SHELL_VARS["device"])
    monkeypatch.setattr(bench, "bench_steps", steps)
    monkeypatch.setattr(bench, "profile_step_cuda", profile)
    monkeypatch.setattr(numba.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def _run_to_file(main, argv, path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(argv) == 0, argv
    pathlib.Path(path).write_text(out.getvalue())


def record_of_the_script(text, tmp_path, monkeypatch) -> dict:
    """The record the script's record step writes, from its bench steps run with their own flags on faked
    measurements."""
    from gpt2lab.explain import gpu_speed_cli
    from gpt2lab.gpt2 import cli
    _fake_measurements(monkeypatch)
    found = commands(text, str(tmp_path))
    record, inputs = _record_inputs(found)
    for command in found:
        if command["stdout"] in inputs:
            _run_to_file(cli.main, command["argv"], command["stdout"])
    _run_to_file(gpu_speed_cli.main, record["argv"], record["stdout"])
    return json.loads(pathlib.Path(record["stdout"]).read_text())


def test_the_record_step_writes_every_section_lesson_6_draws(script_text, tmp_path, monkeypatch):
    from gpt2lab.explain.gpu_recorded import check_record
    record = record_of_the_script(script_text, tmp_path, monkeypatch)
    assert record["device"] == SHELL_VARS["device"] and record["software"] == SHELL_VARS["software"]
    check_record(record, "record.json")   # what `cp record.json explain/gpu_records/` must pass
    for key in ("op_rates", "peaks", "peak_tflops_fp32", "matmul_ladder", "profile", "profile_fused"):
        assert record.get(key), f"the record has no {key!r}"
    # the issue's goals' figures: tiny at B=8, T=64, and the 124M step at B=4, T=1024 on our default kernels,
    # on cuBLAS
    assert sorted((s["config"], s["B"], s["T"], s["matmul"], s.get("flash")) for s in record["steps"]) == [
        ("gpt2", 4, 1024, "cublas", None), ("gpt2", 4, 1024, "numba", None), ("gpt2", 8, 64, "numba", None),
        ("tiny", 8, 64, "numba", None)]
    assert all(s["fused_ms"] and s["fused_launches"] for s in record["steps"])
    assert record["profile"]["config"] == "gpt2" and record["peaks"]["name"] == "H100 SXM"


def test_the_cublas_step_is_the_only_one_on_cublas_and_the_record_says_so(script_text, tmp_path, monkeypatch):
    """The goal "124M at B=4, T=1024 with --matmul cublas <= 1.1x torch" is measured by one bench step; drop
    its flag and the record has no cuBLAS row."""
    benches = [c for c in commands(script_text, str(tmp_path)) if c["argv"][:1] == ["bench"]]
    on_cublas = [c["stdout"].rsplit("/", 1)[1] for c in benches if parse(c).matmul == "cublas"]
    assert on_cublas == ["cublas1024_cuda.json"]
    broken = script_text.replace("--reps 3 --matmul cublas", "--reps 3", 1)
    assert broken != script_text
    assert {s["matmul"] for s in record_of_the_script(broken, tmp_path, monkeypatch)["steps"]} == {"numba"}


def test_the_script_measures_every_goal_and_ends_its_summary_with_them(script_text, tmp_path, monkeypatch):
    """Every goal of the issue gets a verdict from the script's record (none "unknown"), the record step writes
    them to goals.txt, and the run branch's last line appends that to summary.txt."""
    record = record_of_the_script(script_text, tmp_path, monkeypatch)
    from gpt2lab.explain.gpu_speed import goals
    assert [r["met"] for r in goals(record)] == ["no"] * 4   # the faked figures miss every goal (fused: 1.6x)
    written = (tmp_path / "goals.txt").read_text()
    assert all(r["goal"] in written for r in goals(record)) and "unknown" not in written
    assert run_branch(script_text)[-1].startswith('cat "$out/goals.txt" >> "$out/summary.txt"')
    # tiny at the bench's default B=4 is no measure of the goal at B=8
    broken = script_text.replace("--steps tiny,gpt2 --batch 8", "--steps tiny,gpt2", 1)
    assert broken != script_text
    tiny = goals(record_of_the_script(broken, tmp_path, monkeypatch))[2]
    assert tiny["met"] == "unknown" and "measured only at tiny B=4, T=64" in tiny["measured"]


def test_a_bench_step_without_the_ladder_leaves_it_out_of_the_record(script_text, tmp_path, monkeypatch):
    broken = re.sub(r"--no-tokenizer --ladder --reps 3( \\\n\s*|\s)*(--ladder-version v\d+( \\\n\s*|\s)*)+",
                    "--no-tokenizer --no-ladder --reps 3 ", script_text, count=1)
    assert broken != script_text
    assert "matmul_ladder" not in record_of_the_script(broken, tmp_path, monkeypatch)


# ---- tools/gpu_recheck.sh: the short call after a change of defaults, checked the same way

RECHECK = ROOT / "tools" / "gpu_recheck.sh"


def test_every_command_line_of_the_recheck_parses_and_passes_the_checks_before_the_gpu(tmp_path, capsys):
    text = RECHECK.read_text()
    found = commands(text, str(tmp_path))
    assert sorted({c["argv"][0] if c["kind"] == "gpt2lab" else c["kind"] for c in found}) == \
        ["bench", "gpt2lab.kernels.accuracy", "train"]
    for command in found:
        parse(command)
    total = sum(c["limit"] for c in found)
    assert all(c["limit"] for c in found) and f"add up to {total} s" in text and total <= 400
    if _no_gpu_here():
        from gpt2lab.gpt2 import cli
        for command in (c for c in found if c["kind"] == "gpt2lab"):
            assert cli.main(command["argv"]) == 2, command["line"]
            assert "GPU" in capsys.readouterr().err, command["line"]


def test_the_recheck_writes_at_most_the_8_files_a_device_call_returns():
    written = set(re.findall(r'"\$out/([\w.]+)"', RECHECK.read_text()))
    assert len(written) <= 8 and {"summary.txt", "log.txt", "steps1024.json"} <= written, written


# ---- tools/gpu_candidates.sh: the short call for the candidates (matmul v8) before the full checks

CANDIDATES = ROOT / "tools" / "gpu_candidates.sh"


def test_every_command_line_of_the_candidates_call_parses_and_passes_the_checks_before_the_gpu(tmp_path, capsys):
    text = CANDIDATES.read_text()
    found = commands(text, str(tmp_path))
    assert sorted({c["argv"][0] for c in found}) == ["bench", "verify"]
    for command in found:
        parse(command)
    total = sum(c["limit"] for c in found)
    # short enough that the full checks (565 s) still fit the session's 900 s of device time after it, with a
    # machine's start (~30-90 s) and two wheel installs (on a slow boot the full checks' last step, training, is cut)
    assert all(c["limit"] and "timeout -k 5 " in c["line"] for c in found)
    assert f"The limits add up to {total} s" in text and total <= 230
    verify = [parse(c) for c in found if c["argv"][0] == "verify"]
    assert [(a.op, a.version, a.same_as) for a in verify] == [(["matmul"], "v8", None), (["matmul"], "v8", "v7")]
    ladder = next(parse(c) for c in found if "--ladder-version" in c["argv"])
    assert {"v7", "v8"} <= set(ladder.ladder_version)
    steps = [parse(c) for c in found if c["argv"][0] == "bench" and "--steps" in c["argv"] and parse(c).steps]
    assert [(a.steps, a.batch, a.seq, a.matmul, a.profile) for a in steps] == [("gpt2", 4, 1024, "v8", True)]
    if _no_gpu_here():
        from gpt2lab.gpt2 import cli
        for command in found:   # bench and verify
            assert cli.main(command["argv"]) == 2, command["line"]
            assert "GPU" in capsys.readouterr().err, command["line"]


def test_the_candidates_call_writes_at_most_the_8_files_a_device_call_returns():
    written = set(re.findall(r'"\$out/([\w.]+)"', CANDIDATES.read_text()))
    assert len(written) <= 8 and {"summary.txt", "log.txt", "verify.txt", "ladder.json"} <= written, written
    assert "steps1024_v8.json" in written
