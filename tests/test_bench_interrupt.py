"""`gpt2lab bench` stopped by Ctrl-C or SIGTERM (a `timeout`, as tools/gpu_checks.sh puts on every GPU step)
keeps what it measured: the JSON of every row finished before the signal, marked "interrupted", and exit code
130 / 143 as `gpt2lab train` uses them. Before, SIGTERM killed it with nothing printed, and a limit that came
a second too early lost a whole GPU step's figures."""
import json
import signal
import sys

import pytest

from interrupt import signal_when


def bench_until_a_row_then(sig) -> tuple[int, dict, str]:
    """Start a CPU whole-step bench of two configs; once the first config's row is printed, send sig."""
    cmd = [sys.executable, "-m", "gpt2lab.gpt2.cli", "bench", "--json", "--no-ops", "--no-ladder", "--no-tokenizer",
           "--steps", "tiny,gpt2", "--reps", "2"]
    lines = []

    def first_row_printed(proc):   # the progress goes to stderr
        lines.append(proc.stderr.readline())
        return lines[-1].lstrip().startswith("step tiny")
    # A shell's background jobs (`make -j2`, CI runners) start with SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: give the child Ctrl-C's default, as a terminal does (train's tests need not:
    # train installs its own handlers)
    returncode, out, err = signal_when(cmd, first_row_printed, sig, wait=240, finish=120,
                                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return returncode, json.loads(out), "".join(lines) + err


@pytest.mark.parametrize("sig, code, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")])
def test_a_signal_keeps_the_rows_finished_before_it(sig, code, name):
    returncode, out, err = bench_until_a_row_then(sig)
    assert returncode == code, err[-2000:]
    assert out["interrupted"] == name
    assert [r["config"] for r in out["steps"]] == ["tiny"]   # gpt2's row was not finished: it is not there
    assert out["steps"][0]["ours_ms"] > 0 and out["steps"][0]["torch_ms"] > 0
    assert f"stopped by {name}: the figures measured before it are kept" in err


def test_the_record_step_takes_a_cut_short_file_and_says_so(tmp_path, capsys):
    from gpt2lab.explain.gpu_speed_cli import main
    from test_gpu_checks import _step_row
    cut = tmp_path / "steps_cuda.json"
    cut.write_text(json.dumps({"device": "cuda", "matmul": "numba", "interrupted": "SIGTERM",
                               "steps": [_step_row("tiny", 8, 64)]}))
    assert main([str(cut), "--device", "NVIDIA H100"]) == 0
    out, err = capsys.readouterr()
    assert f"{cut} was cut short (SIGTERM): only the rows it finished are in the record" in err
    assert [s["config"] for s in json.loads(out)["steps"]] == ["tiny"]
