"""`gpt2lab verify` and the accuracy probes (`python -m gpt2lab.kernels.accuracy`) stopped by SIGTERM (a
`timeout`, as tools/gpu_checks.sh puts on every GPU step) or Ctrl-C keep the rows they finished before the signal:
printed as a finished run's (table or JSON), exit 143 / 130 (gpt2lab.signals.each_until_stopped). Before, a limit
that came a second too early lost every row of the GPU's verify and accuracy steps: both printed at the end.
"""
import json
import signal
import sys

from interrupt import signal_when


def test_sigterm_keeps_the_rows_of_the_ops_checked_before_it():
    cmd = [sys.executable, "-m", "gpt2lab.gpt2.cli", "verify", "--op", "gelu", "--op", "matmul", "--op", "attention"]
    lines = []

    def first_op_checked(proc):   # the progress goes to stderr
        lines.append(proc.stderr.readline())
        return lines[-1].strip() == "checked gelu"
    returncode, out, err = signal_when(cmd, first_op_checked, signal.SIGTERM, wait=240, finish=120)
    err = "".join(lines) + err
    assert returncode == 143, err[-2000:]
    assert "stopped by SIGTERM: the" in err and "rows checked before it are below" in err
    ops = {line.split()[0] for line in out.splitlines()[1:-1]}
    assert "gelu" in ops and "attention" not in ops, out   # matmul: checked or cut, depending on the moment


def test_the_json_of_a_stopped_same_as_check_is_the_rows_before_it(monkeypatch, capsys):
    """--same-as stops the same way (the signal stood in for by the KeyboardInterrupt its handler raises)."""
    from gpt2lab.kernels import same_bits, verify_cli
    real, calls = same_bits.same_bits, []

    def second_op_interrupted(op, *args):
        calls.append(op)
        if len(calls) == 2:
            raise KeyboardInterrupt("SIGTERM")
        return real(op, *args)
    monkeypatch.setattr(same_bits, "same_bits", second_op_interrupted)
    argv = ["--op", "matmul", "--op", "attention", "--version", "blas", "--same-as", "blas", "--json"]
    assert verify_cli.main(argv) == 143
    rows = json.loads(capsys.readouterr().out)
    assert calls == ["matmul", "attention"] and {r["op"] for r in rows} == {"matmul"} and all(r["same"] for r in rows)


def test_the_accuracy_probes_keep_the_rows_measured_before_a_signal(monkeypatch, capsys):
    from gpt2lab.kernels import accuracy_cli
    calls = []

    def second_probe_interrupted(name, device, versions):
        calls.append(name)
        if len(calls) == 2:
            raise KeyboardInterrupt("SIGINT")
        return [{"probe": name, "tensor": "t", "version": "blas", "ours": 1.0, "torch32": 1.0, "pairwise32": None,
                 "ratio": 1.0, "ratio_torch32": 1.0, "ok": True}]
    monkeypatch.setattr(accuracy_cli, "measure", second_probe_interrupted)
    argv = ["--device", "cpu", "--probe", "matmul.dinp", "--probe", "matmul.dweight", "--json"]
    assert accuracy_cli.main(argv) == 130
    captured = capsys.readouterr()
    assert [r["probe"] for r in json.loads(captured.out)] == ["matmul.dinp"]
    assert "stopped by SIGINT: the 1 rows measured before it are below" in captured.err


def test_each_until_stopped_puts_the_signal_handlers_back():
    from gpt2lab.signals import each_until_stopped
    before = signal.getsignal(signal.SIGTERM)
    rows = []
    assert each_until_stopped([1, 2, 3], lambda i: [i * 10], rows) is None and rows == [10, 20, 30]
    assert signal.getsignal(signal.SIGTERM) is before
