"""kernels/profile.py's GPU path, checked without a GPU: numba's events and synchronize are replaced by fakes
that keep a simulated GPU clock, and the kernel's compiled launch by one that advances it.

Checked: with no profile open a launch records no event; inside one, each launch (and memset_zero) is
bracketed by two events, the events are read only after the one synchronize at the close (never one per
launch), and the rows group the launches by kernel name with their GPU time, the idle gaps in their own row.
"""
import numpy as np
import pytest
from numba import cuda

from gpt2lab.kernels import _cuda
from gpt2lab.kernels.profile import EVENTS, IDLE, Profile, profile, table


class FakeGPU:
    """A GPU clock in ms: a launch takes `duration` of it, the host's gap before each launch `gap`."""

    def __init__(self):
        self.now, self.events, self.syncs = 0.0, 0, 0

    def event(self, timing=True):
        gpu = self

        class Event:
            def record(self, stream=0):
                gpu.events += 1
                self.at = gpu.now

            def elapsed_time(self, end):
                if gpu.syncs == 0:
                    raise AssertionError("an event was read before the GPU was synchronized")
                return end.at - self.at
        return Event()

    def synchronize(self):
        self.syncs += 1


class FakeDeviceArray:
    shape, ndim, dtype, strides = (4,), 1, np.dtype(np.float32), (4,)

    def is_c_contiguous(self):
        return True


def fake_kernel(gpu, name, duration):
    """A @cuda_kernel whose numba parts are fakes: every launch takes `duration` ms on the fake GPU, after a
    1 ms gap (the host launching it)."""
    class Compiled:
        def launch(self, args, griddim, blockdim, stream, sharedmem):
            gpu.now += duration

    class Configured:
        griddim, blockdim, stream, sharedmem = (1, 1, 1), (1, 1, 1), 0, 0

        def __call__(self, *args):
            gpu.now += duration

    class Dispatcher:
        overloads = {("f32",): Compiled()}

        def __getitem__(self, config):
            return Configured()

        def typeof_pyval(self, a):
            return "f32"

    def body(out):
        pass
    body.__name__ = name
    k = _cuda.kernel(body)
    k.dispatcher = Dispatcher()

    def launch():
        gpu.now += 1.0   # the host's launch gap: the GPU idles
        k[1, 1](FakeDeviceArray())
    return launch


@pytest.fixture
def gpu(monkeypatch):
    gpu = FakeGPU()
    monkeypatch.setattr(cuda, "event", gpu.event)
    monkeypatch.setattr(cuda, "synchronize", gpu.synchronize)
    monkeypatch.setattr(_cuda, "_simulated", lambda: False)
    monkeypatch.setattr(_cuda, "_memset_zero", lambda a: setattr(gpu, "now", gpu.now + 0.5))
    return gpu


def test_no_profile_no_events(gpu):
    add, mul = fake_kernel(gpu, "add_kernel", 2.0), fake_kernel(gpu, "mul_kernel", 3.0)
    for launch in (add, mul, add):
        launch()
    _cuda.memset_zero(FakeDeviceArray())
    assert gpu.events == 0 and gpu.syncs == 0 and gpu.now == 1 + 2 + 1 + 3 + 1 + 2 + 0.5


def test_each_launch_between_two_events_read_after_one_synchronize(gpu):
    add, mul = fake_kernel(gpu, "add_kernel", 2.0), fake_kernel(gpu, "mul_kernel", 3.0)
    n0 = _cuda.launch_count()
    with profile() as prof:
        add()
        mul()
        add()
        _cuda.memset_zero(FakeDeviceArray())
        assert gpu.syncs == 0   # nothing waits while the step runs
    assert prof.clock == EVENTS and gpu.syncs == 1 and gpu.events == 2 * 4 == 2 * (_cuda.launch_count() - n0)
    # GPU span: from add's start (t=1) to the memset's end (t=1+2+1+3+1+2+0.5 = 10.5): 9.5 ms, of which the
    # kernels take 2+3+2+0.5 = 7.5, the two 1 ms launch gaps between them are idle
    assert prof.step_ms() == pytest.approx(9.5)
    rows = {r["kernel"]: r for r in prof.rows()}
    assert [r["kernel"] for r in prof.rows()] == ["add_kernel", "mul_kernel", "memset_zero", IDLE]
    assert (rows["add_kernel"]["calls"], rows["add_kernel"]["ms"]) == (2, pytest.approx(4.0))
    assert rows["mul_kernel"]["pct"] == pytest.approx(100 * 3 / 9.5)
    assert rows[IDLE]["ms"] == pytest.approx(2.0) and rows[IDLE]["calls"] == 0
    text = prof.table(top=1)
    assert "other (2 kernels)" in text and "cuda events" in text.splitlines()[0]
    assert text == table(prof.as_dict(), top=1)
    # closed: a launch adds nothing
    add()
    assert prof.launches == 4 and gpu.events == 8


def test_profiles_do_not_nest_and_results_wait_for_the_close(gpu):
    with profile() as prof:
        with pytest.raises(RuntimeError, match="already open"):
            with profile():
                pass
        with pytest.raises(RuntimeError, match="after the `with profile"):
            prof.rows()
    assert _cuda._PROFILER[0] is None and prof.rows()[-1]["ms"] == 0.0
    with pytest.raises(ValueError, match="clock must be"):
        Profile(clock="sundial")


def test_an_error_in_the_step_still_closes_the_profile(gpu):
    with pytest.raises(ZeroDivisionError):
        with profile():
            1 / 0
    assert _cuda._PROFILER[0] is None
