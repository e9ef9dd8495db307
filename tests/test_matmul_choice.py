"""`--matmul numba|cublas` (gpt2lab train and bench) and bench's matmul version ladder.

Without a GPU, --matmul cublas must end in one line with exit code 2; the swap itself goes through the kernel
model's one swap point (Kernels). The ladder runs on the CPU for the CPU versions (loops, blas) at a tiny
shape here; on a GPU it times every CUDA version against cuBLAS.
"""
import argparse
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


def test_ladder_version_times_only_the_named_versions_and_the_reference(monkeypatch, capsys):
    monkeypatch.setitem(bench.LADDER_SHAPES, "cpu", (TINY,))
    code = bench_cli.main(["--ladder-version", "blas", "--no-ops", "--steps", "", "--no-tokenizer", "--reps", "1",
                           "--json"])   # no --ladder: the version implies it
    assert code == 0
    assert [r["version"] for r in json.loads(capsys.readouterr().out)["matmul_ladder"]] == ["blas"]  # not loops
    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)
    args = parser.parse_args(["--device", "cuda", "--ladder-version", "v7", "--ladder-version", "v5"])
    assert bench_cli.ladder_versions(args) == ("v7", "v5", "cublas")   # the reference added, once
    assert bench_cli.ladder_versions(parser.parse_args(["--ladder"])) is None   # every version


@pytest.mark.parametrize("argv, needle", [
    (["--ladder-version", "v7"], "--ladder-version v7: not a matmul version on cpu; choose from loops, blas"),
    (["--device", "cuda", "--ladder-version", "v9"], "--ladder-version v9: not a matmul version on cuda; choose from"),
    (["--ladder-version", "blas", "--no-ladder"], "--ladder-version and --no-ladder contradict each other"),
])
def test_a_wrong_ladder_version_is_one_line_before_any_gpu_test(argv, needle, capsys):
    one_line(capsys, bench_cli.main(argv + ["--no-ops", "--steps", "", "--no-tokenizer"]), needle)


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
    """--inject-fault matmul (or attention, on the per-op path: the fused one, cuda's default, keeps flash
    attention) breaks our kernel; with cuBLAS in its place nothing would be broken."""
    argv = ["train", "--steps", "1", "--out", str(tmp_path / "run"), "--backend", "numba", "--device", "cuda",
            "--no-fused", "--matmul", "cublas", "--inject-fault", op]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and f"breaks our {op} kernel, which --matmul cublas replaces: run it without --matmul cublas" \
        in err[-1], err


def test_a_version_of_ours_swaps_only_the_matmul_and_flash_only_the_flash_pair():
    from gpt2lab.kernels import attention
    kernels = matmul_kernels("v5")
    for fn in (kernels.matmul_forward, kernels.matmul_backward):
        assert isinstance(fn, functools.partial) and fn.keywords == {"version": "v5"}
    assert kernels.attention_forward is Kernels().attention_forward       # cuBLAS's swap takes attention too; v5 not
    assert kernels.attention_forward_flash is Kernels().attention_forward_flash
    flashed = matmul_kernels("numba", flash="v5")
    assert flashed.matmul_forward is Kernels().matmul_forward
    for fn, ref in ((flashed.attention_forward_flash, attention.attention_forward_flash),
                    (flashed.attention_backward_flash, attention.attention_backward_flash)):
        assert fn.func is ref and fn.keywords == {"version": "v5"}
    with pytest.raises(ValueError, match="flash must be one of"):
        matmul_kernels("numba", flash="v3")


def test_the_command_line_choices_are_the_kernels_own():
    from gpt2lab.gpt2.choices import FLASHES, MATMULS
    from gpt2lab.kernels import attention
    assert MATMULS == ("numba", *matmul.CUDA_VERSIONS)
    assert FLASHES == attention.FLASH_CUDA_VERSIONS


@pytest.mark.parametrize("argv, needle", [
    (["--matmul", "v5"], "--matmul v5 swaps the numba backend's matmul on the GPU: it needs --backend numba "
                         "--device cuda"),
    (["--flash", "v5"], "--flash v5 picks the fused path's flash attention on the GPU: it needs --backend numba "
                        "--device cuda on the fused path"),
    (["--backend", "numba", "--device", "cuda", "--no-fused", "--flash", "v5"], "on the fused path (not --no-fused"),
    # no --fused: on cuda the fused path is the default, so --flash is taken and then refused for the fault
    (["--backend", "numba", "--device", "cuda", "--flash", "v4", "--inject-fault", "attention"],
     "breaks our flash attention, which --flash v4 replaces: run it without --flash"),
    (["--backend", "numba", "--device", "cuda", "--matmul", "v5", "--inject-fault", "matmul"],
     "breaks our matmul kernel, which --matmul v5 replaces: run it without --matmul v5"),
    (["--backend", "numba", "--device", "cuda", "--fused", "--flash", "v5", "--inject-fault", "attention"],
     "breaks our flash attention, which --flash v5 replaces: run it without --flash"),
])
def test_train_matmul_version_and_flash_are_refused_in_one_line_where_they_cannot_run(argv, needle, capsys,
                                                                                     tmp_path):
    code = main(["train", "--steps", "1", "--out", str(tmp_path / "run")] + argv)
    err = capsys.readouterr().err
    # (an injected fault is announced on the line before)
    assert code == 2 and "Traceback" not in err and needle in err.strip().splitlines()[-1], err


@pytest.mark.parametrize("argv, needle", [
    (["--matmul", "v5"], "--matmul v5 runs on the GPU: it needs --device cuda"),
    (["--flash", "v5"], "--flash v5 runs on the GPU: it needs --device cuda"),
])
def test_bench_matmul_version_and_flash_need_the_gpu(argv, needle, capsys):
    one_line(capsys, bench_cli.main(argv + ["--no-ops", "--steps", "", "--no-tokenizer"]), needle)


def test_the_fused_path_is_the_default_on_a_gpu_only():
    from gpt2lab.gpt2.choices import default_fused
    assert default_fused("numba", "cuda") and not default_fused("numba", "cpu")
    assert not default_fused("torch", "cuda")   # the reference has one path
