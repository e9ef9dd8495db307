import os
import sys
import tempfile

import pytest

# A private token/model cache per test session: tests never read or pollute a learner's ~/.cache.
os.environ.setdefault("GPT2LAB_CACHE", tempfile.mkdtemp(prefix="gpt2lab-test-cache-"))

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    # The simulator runs each CUDA thread as a Python thread; a short switch interval makes
    # block-wide barriers (syncthreads) far cheaper.
    sys.setswitchinterval(1e-4)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: a second torch thread only adds OpenMP barrier waits, slow on a busy 2-core machine."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
