"""residual's entry points: bad inputs raise errors naming the argument; the backward accumulates."""
import numpy as np
import pytest

from gpt2lab.kernels.residual import residual_backward, residual_forward

SHAPE = (2, 3, 5)


def zeros(shape=SHAPE, dtype=np.float32):
    return np.zeros(shape, dtype)


def test_forward_rejects_wrong_dtype_shape_layout():
    with pytest.raises(TypeError, match=r"residual_forward: inp2 must be float32.*got float64 \(2, 3, 5\)"):
        residual_forward(zeros(), zeros(), zeros(dtype=np.float64))
    with pytest.raises(ValueError, match=r"residual_forward: out must be float32.*got float32 \(2, 3, 6\)"):
        residual_forward(zeros((2, 3, 6)), zeros(), zeros())
    with pytest.raises(ValueError, match="residual_forward: inp1 must be C-contiguous"):
        residual_forward(zeros(), zeros((2, 5, 3)).transpose(0, 2, 1), zeros())


def test_backward_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"residual_backward: dinp2 must be float32"):
        residual_backward(zeros(), zeros((2, 3)), zeros())
    with pytest.raises(TypeError, match="residual_backward: dout must be a numpy or CUDA device array"):
        residual_backward(zeros(), zeros(), [0.0])


def test_backward_accumulates():
    dout = np.arange(30, dtype=np.float32).reshape(SHAPE)
    dinp1, dinp2 = np.ones(SHAPE, np.float32), zeros()
    residual_backward(dinp1, dinp2, dout)
    residual_backward(dinp1, dinp2, dout)
    np.testing.assert_array_equal(dinp1, 1 + 2 * dout)
    np.testing.assert_array_equal(dinp2, 2 * dout)
