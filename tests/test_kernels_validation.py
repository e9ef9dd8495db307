"""Public kernel entry points reject bad inputs with errors that name the argument."""
import numpy as np
import pytest

from gpt2lab.kernels.gelu import gelu_backward, gelu_forward


def test_gelu_rejects_wrong_dtype_shape_layout():
    x = np.zeros((2, 3, 5), np.float32)
    with pytest.raises(TypeError, match=r"gelu_forward: inp must be float32.*got float64 \(2, 3, 5\)"):
        gelu_forward(np.zeros_like(x), x.astype(np.float64))
    with pytest.raises(ValueError, match=r"gelu_forward: out must be float32.*got float32 \(2, 3, 4\)"):
        gelu_forward(np.zeros((2, 3, 4), np.float32), x)
    with pytest.raises(ValueError, match="C-contiguous"):
        gelu_forward(np.zeros((2, 5, 3), np.float32).transpose(0, 2, 1), x)
    with pytest.raises(TypeError, match="numpy or CUDA device array"):
        gelu_backward([0.0], x, x)
