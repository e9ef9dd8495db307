"""Run a gpt2lab command in a subprocess and signal it once it is ready: how the Ctrl-C and SIGTERM tests
interrupt a real run (train once its JSON log has two steps, bench once it has printed a row)."""
import subprocess
import time


def signal_when(cmd: list, ready, sig, wait: float = 60, finish: float = 60, **popen) -> tuple[int, str, str]:
    """Start cmd, call ready(proc) until it is true (`wait` s at most, the process alive), send `sig`, let it
    finish (`finish` s at most); (returncode, stdout, the stderr ready did not read)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    try:
        deadline = time.time() + wait
        while not ready(proc):
            assert time.time() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else "timeout"
            time.sleep(0.05)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=finish)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err


def signal_after_two_steps(cmd: list, log, sig) -> tuple[int, str]:
    """Start cmd, wait (60 s at most) for two lines in the JSON log `log`, send `sig`; (returncode, stderr)."""
    returncode, _, err = signal_when(cmd, lambda proc: log.exists() and log.read_text().count("\n") >= 2, sig)
    return returncode, err
