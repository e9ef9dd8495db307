"""`--matmul numba|cublas` (gpt2lab train and bench) and bench's matmul version ladder.

Without a GPU, --matmul cublas must end in one line with exit code 2; the swap itself goes through the kernel
model's one swap point (Kernels). The ladder runs on the CPU for the CPU versions (loops, blas) at a tiny
shape here; on a GPU it times every CUDA version against cuBLAS.
"""
import functools
import json

import pytest

from gpt2lab.gpt2 import bench_cli
from gpt2lab.gpt2.cli import main
from gpt2lab.gpt2.kernel_model import Kernels
from gpt2lab.gpt2.train import matmul_kernels
from gpt2lab.kernels import bench, matmul

TINY = {"name": "tiny", "N": 5, "C": 7, "OC": 9}


def one_line(capsys, code, needle):
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert needle in lines[0], lines[0]


def test_cublas_goes_through_the_swap_point():
    assert matmul_kernels("numba") is None               # the model's own defaults, untouched
    kernels = matmul_kernels("cublas")
    for fn in (kernels.matmul_forward, kernels.matmul_backward):
        assert isinstance(fn, functools.partial) and fn.keywords == {"version": "cublas"}
    assert kernels.matmul_forward.func is matmul.matmul_forward
    assert kernels.matmul_backward.func is matmul.matmul_backward
    assert kernels.gelu_forward is Kernels().gelu_forward  # nothing else swapped

    def my_gelu(out, inp):
        pass
    both = matmul_kernels("cublas", Kernels(gelu_forward=my_gelu))  # e.g. another op's injected fault stays
    assert both.gelu_forward is my_gelu and both.matmul_forward.keywords == {"version": "cublas"}
    with pytest.raises(ValueError, match="matmul must be one of"):
        matmul_kernels("cutlass")


@pytest.mark.parametrize("argv, needle", [
    (["--matmul", "cublas"], "--matmul cublas swaps the numba backend's matmul on the GPU: it needs --backend "
                             "numba --device cuda"),
    (["--backend", "numba", "--device", "cuda", "--matmul", "cublas"], "--matmul cublas: no NVIDIA GPU"),
    (["--matmul", "cuBLAS"], "--matmul"),
])
def test_train_matmul_cublas_without_a_gpu_is_one_line(argv, needle, capsys, tmp_path):
    from numba import cuda
    if cuda.is_available():
        pytest.skip("a GPU is here: cublas can run")
    one_line(capsys, main(["train", "--steps", "1", "--out", str(tmp_path / "run")] + argv), needle)


@pytest.mark.parametrize("argv, needle", [
    (["--matmul", "cublas"], "--matmul cublas runs on the GPU: it needs --device cuda"),
    (["--device", "cuda", "--matmul", "cublas"], "NVIDIA GPU"),
])
def test_bench_matmul_cublas_without_a_gpu_is_one_line(argv, needle, capsys):
    from numba import cuda
    if cuda.is_available():
        pytest.skip("a GPU is here: cublas can run")
    one_line(capsys, bench_cli.main(argv + ["--no-ops", "--steps", "", "--no-tokenizer"]), needle)


def test_ladder_times_every_cpu_version_against_blas():
    rows = bench.bench_matmul_ladder("cpu", reps=1, shapes=[TINY], progress=lambda m: None)
    assert [r["version"] for r in rows] == list(matmul.CPU_VERSIONS)
    by = {r["version"]: r for r in rows}
    assert by["blas"]["pct_of_reference"] == pytest.approx(100) and by["blas"]["default"]
    for r in rows:
        assert r["ms"] > 0 and r["reference"] == "blas"
        assert r["tflops"] == pytest.approx(6 * 5 * 7 * 9 / (r["ms"] * 1e-3) / 1e12)
        assert r["pct_of_reference"] == pytest.approx(100 * by["blas"]["ms"] / r["ms"])


def test_ladder_in_bench_json(monkeypatch, capsys):
    monkeypatch.setitem(bench.LADDER_SHAPES, "cpu", (TINY,))
    code = bench_cli.main(["--ladder", "--no-ops", "--steps", "", "--no-tokenizer", "--reps", "1", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["matmul"] == "numba"
    assert {r["version"] for r in out["matmul_ladder"]} == set(matmul.CPU_VERSIONS)
    assert "ops" not in out  # --no-ops: only the ladder


def test_an_attention_fault_on_the_fused_path_mixes_with_cublas(capsys, tmp_path):
    """The fused path keeps flash attention, which cuBLAS does not replace: the fault still hits our kernel, so
    it is no reason to refuse (here the missing GPU is)."""
    from numba import cuda
    if cuda.is_available():
        pytest.skip("a GPU is here: the run would start")
    code = main(["train", "--steps", "1", "--out", str(tmp_path / "run"), "--backend", "numba", "--device", "cuda",
                 "--matmul", "cublas", "--fused", "--inject-fault", "attention"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "--matmul cublas: no NVIDIA GPU" in err[-1], err


@pytest.mark.parametrize("op", ["matmul", "attention"])
def test_a_matmul_or_attention_fault_and_cublas_do_not_mix(op, capsys, tmp_path):
    """--inject-fault matmul (or attention) breaks our kernel; with cuBLAS in its place nothing would be broken."""
    argv = ["train", "--steps", "1", "--out", str(tmp_path / "run"), "--backend", "numba", "--device", "cuda",
            "--matmul", "cublas", "--inject-fault", op]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and f"breaks our {op} kernel, which --matmul cublas replaces: run it without --matmul cublas" \
        in err[-1], err
