"""Each kernel's PTX compiled once per test session, shared by the tests that read it (test_kernels_ptx,
test_kernels_resources) and by pytest-xdist's workers: compiling every kernel takes ~25 s on 2 cores.

Files under GPT2LAB_TEST_PTX, a directory conftest.py makes for the session (workers inherit the variable)
and removes at its end: nothing outlives the session, so a changed kernel is never read from a stale file.
"""
import hashlib
import os


def ptx_of(kernel, signature: str) -> str:
    """The PTX of `kernel` (a @cuda_kernel) for `signature`, sm_90: compile_ptx's, read back if compiled
    before in this session."""
    from gpt2lab.kernels._cuda import compile_ptx
    key = hashlib.sha256(f"{kernel.__module__}.{kernel.__qualname__}|{signature}".encode()).hexdigest()[:24]
    path = os.path.join(os.environ["GPT2LAB_TEST_PTX"], f"{kernel.__name__}-{key}.ptx")
    if os.path.exists(path):
        with open(path) as f:
            return f.read()
    ptx = compile_ptx(kernel, signature)
    with open(f"{path}.{os.getpid()}", "w") as f:  # written aside, then renamed: a reader never sees half a file
        f.write(ptx)
    os.replace(f"{path}.{os.getpid()}", path)
    return ptx
