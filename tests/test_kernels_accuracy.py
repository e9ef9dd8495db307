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


def test_cuda_probes_without_a_gpu_say_so_in_one_line(capsys):
    from numba import cuda

    from gpt2lab.kernels.accuracy_cli import main
    from oneline import one_line_error
    if cuda.is_available():
        pytest.skip("this machine has a GPU")
    one_line_error(capsys, main(["--device", "cuda"]), "--device cuda needs an NVIDIA GPU", "--device cudasim")
