import atexit
import os
import shutil
import sys
import tempfile

import pytest

# A private token/model cache per test session: tests never read or pollute a learner's ~/.cache. Made once
# (pytest-xdist's workers inherit the variable) and removed when the session that made it ends.
if "GPT2LAB_CACHE" not in os.environ:
    os.environ["GPT2LAB_CACHE"] = tempfile.mkdtemp(prefix="gpt2lab-test-cache-")
    atexit.register(shutil.rmtree, os.environ["GPT2LAB_CACHE"], ignore_errors=True)
# Each kernel's PTX, compiled once per session (tests/ptx_cache.py); made and removed like the cache above.
if "GPT2LAB_TEST_PTX" not in os.environ:
    os.environ["GPT2LAB_TEST_PTX"] = tempfile.mkdtemp(prefix="gpt2lab-test-ptx-")
    atexit.register(shutil.rmtree, os.environ["GPT2LAB_TEST_PTX"], ignore_errors=True)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: a second torch thread only adds OpenMP barrier waits, slow on a busy 2-core machine."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _close_figures():
    """Every test starts with no pyplot figure open: figures a test leaves behind pile up in an xdist worker."""
    yield
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")
