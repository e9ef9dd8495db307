import os
import sys
import tempfile

# A private token/model cache per test session: tests never read or pollute a learner's ~/.cache.
os.environ.setdefault("GPT2LAB_CACHE", tempfile.mkdtemp(prefix="gpt2lab-test-cache-"))

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    # The simulator runs each CUDA thread as a Python thread; a short switch interval makes
    # block-wide barriers (syncthreads) far cheaper.
    sys.setswitchinterval(1e-4)
