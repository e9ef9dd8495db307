"""Run `gpt2lab train` in a subprocess and signal it once its JSON log has two steps: how the Ctrl-C and
SIGTERM tests interrupt a real run."""
import subprocess
import time


def signal_after_two_steps(cmd: list, log, sig) -> tuple[int, str]:
    """Start cmd, wait (60 s at most) for two lines in the JSON log `log`, send `sig`; (returncode, stderr)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not (log.exists() and log.read_text().count("\n") >= 2):
            assert time.time() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else "timeout"
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err
