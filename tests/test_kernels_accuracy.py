"""The CPU (@njit) kernels' long reductions (the lm_head's dinp over V = 50257, dweight and dbias over B*T
rows, softmax over V, layernorm's dweight and dbias, the embedding scatter-add) are within K x PyTorch
float32's error against float64, on the CPU. matmul's dbias was 17x before its cascade sum (see
_bias_backward_cpu); the others use BLAS or match PyTorch's own CPU loops."""
import pytest

from gpt2lab.kernels import accuracy


@pytest.mark.parametrize("probe", sorted(accuracy.PROBES))
def test_cpu_kernel_as_accurate_as_pytorch(probe, one_torch_thread):
    rows = accuracy.measure(probe, "cpu")
    assert rows
    bad = [r for r in rows if not r["ok"]]
    assert not bad, accuracy.format_rows(bad)
