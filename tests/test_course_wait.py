"""A second notebook that asks for the course model while a first one trains it says what it waits for."""
import fcntl
import threading
import time

from gpt2lab.gpt2 import course


def test_a_waiting_process_says_what_it_waits_for(tmp_path, capsys):
    lock = tmp_path / "course-tiny.lock"
    entered = threading.Event()
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)        # "the first notebook" is training

        def second():
            with course._course_lock(tmp_path / "course-tiny"):
                entered.set()

        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        assert not entered.is_set()             # it waits ...
        fcntl.flock(held, fcntl.LOCK_UN)
    t.join(timeout=10)
    assert entered.is_set()                     # ... and goes on when the lock is free
    assert "waiting for the course model" in capsys.readouterr().err


def test_an_uncontended_lock_says_nothing(tmp_path, capsys):
    with course._course_lock(tmp_path / "course-tiny"):
        pass
    assert capsys.readouterr().err == ""
