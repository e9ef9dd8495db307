"""`gpt2lab bench`'s rates: the bytes and flops each op case must move and compute, worked by hand here; the
data-sheet peaks by device name; and --profile's one-line refusals where it cannot run."""
import pytest

from gpt2lab.gpt2.cli import main
from gpt2lab.kernels.bench import OP_WORK, OP_BENCHES, SHAPES, device_peaks, matmul_flops, op_work
from oneline import one_line_error


def test_every_op_case_has_its_work():
    assert set(OP_WORK) == set(OP_BENCHES)
    for name in OP_WORK:
        moved, flops = op_work(name, SHAPES[0])
        assert moved > 0 and flops > 0, name


def test_matmul_work_by_hand():
    # N = B*T = 2 rows, C = 3, OC = 4*C = 12. Forward reads inp 2*3, weight 12*3, bias 12 and writes out 2*12:
    # 6 + 36 + 12 + 24 = 78 floats. Backward reads dout 24, inp 6, weight 36 and reads + writes dinp 2*6,
    # dweight 2*36, dbias 2*12: 24 + 6 + 36 + 12 + 72 + 24 = 174. 252 floats = 1008 bytes.
    # flops: 3 products of 2*3*12 multiply-adds = 6 * 72 = 432, plus the bias add and dbias sum 2 * 24 = 48.
    s = {"B": 1, "T": 2, "C": 3, "V": 5, "NH": 1}
    assert op_work("matmul", s) == (1008, 480)
    assert matmul_flops(2, 3, 12) == 432


def test_residual_and_attention_work_by_hand():
    s = {"B": 2, "T": 3, "C": 4, "V": 5, "NH": 2}
    # residual on 2*3*4 = 24 elements: forward reads 2, writes 1; backward reads dout, reads + writes da, db:
    # 8 floats per element; flops: the add, and the two += backward
    assert op_work("residual", s) == (8 * 24 * 4, 3 * 24)
    # attention: the causal pairs of T = 3 are 3 + 2 + 1 = 6 per head; per pair and head 2 forward and 4
    # backward products of hs = 2 multiply-adds: 6 * 2 * 2 flops each, over 2 heads and 2 sequences
    assert op_work("attention", s)[1] == 2 * 2 * 6 * (6 * 2 * 2)


def test_adamw_work_counts_seven_reads_and_writes_per_parameter():
    moved, flops = op_work("adamw", SHAPES[0], device="cpu")
    assert moved == 7 * 4 * 7_000_000 and flops == 16 * 7_000_000
    with pytest.raises(ValueError, match="name 'softmax' is not an op case"):
        op_work("softmax", SHAPES[0])


@pytest.mark.parametrize("name, label, tflops, gbs", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 67.0, 3350.0),
    ("NVIDIA H100 PCIe", "H100 PCIe", 51.0, 2000.0),
    ("NVIDIA H200", "H200 SXM", 67.0, 4800.0),
    ("NVIDIA A100-SXM4-80GB", "A100 80GB SXM", 19.5, 2039.0),
    ("NVIDIA A100-PCIE-40GB", "A100 40GB", 19.5, 1555.0),
])
def test_device_peaks_by_name(name, label, tflops, gbs):
    peaks = device_peaks(name)
    assert (peaks["name"], peaks["tflops_fp32"], peaks["gbytes_s"]) == (label, tflops, gbs)
    assert "data sheet" in peaks["source"]


def test_an_unknown_device_has_no_peaks():
    assert device_peaks("Tesla T4") is None


def test_profile_needs_the_gpu_and_a_config(capsys):
    one_line_error(capsys, main(["bench", "--profile", "--no-ops", "--no-tokenizer"]),
                   "--profile", "--device cuda")
    one_line_error(capsys, main(["bench", "--device", "cuda", "--profile", "--steps", "", "--no-ops",
                                 "--no-tokenizer"]), "--profile", "--steps is empty")
    one_line_error(capsys, main(["bench", "--device", "cuda", "--profile", "--no-ops", "--no-tokenizer"]),
                   "--device cuda needs an NVIDIA GPU")


def test_a_cuda_only_op_is_skipped_on_the_cpu_with_a_line_saying_so():
    from gpt2lab.kernels.bench import CUDA_ONLY_OPS, bench_ops
    said = []
    assert bench_ops("cpu", ops=list(CUDA_ONLY_OPS), reps=1, progress=said.append) == []
    assert said == [f"  {op}: skipped (a CUDA version: it needs --device cuda)" for op in CUDA_ONLY_OPS]
