"""matmul v4 and v5 (register-blocked CUDA) and "cublas" (cuBLAS through torch on the same memory).

v4 and v5 (v4 with 128-bit shared loads: other thread-to-output and loader mappings, the same sums) run in
numba's simulator (its own process: NUMBA_ENABLE_CUDASIM=1 is read when numba is imported) at one
awkward shape that exercises every path: rows and columns not multiples of the 64 x 64 tile, two tiles
across, a reduction split in two (one range partial) and its in-order sum, the bias epilogue. The cublas
version needs a GPU; its code runs here on CPU torch tensors through the same functions (kernels/_cublas.py):
the transposes, the bias, the accumulation and that it writes our buffers in place.
"""
import functools
import json

import numpy as np
import pytest

from gpt2lab.kernels import _cublas, matmul
from simulated import measure_in_simulator, run_in_simulator

# B*T = 9 rows (one partial tile, past v5's first 8 loader rows), C = 37 (two k-tiles, one partial), OC = 65
# (two tiles across). dinp sums K = 65 over a single tile: split into 64 + 1; dweight (65, 37) spans two row
# tiles.
AWKWARD = {"B": 3, "T": 3, "C": 37, "OC": 65}

_SIM_SCRIPT = """
import json, sys
from dataclasses import asdict
from gpt2lab.kernels import matmul
from gpt2lab.kernels.check import check_op
shape = json.loads(sys.argv[1])
if sys.argv[2] == "v6":   # v6 splits only reductions of 8+ k-tiles: let this short one split, to test the path
    matmul.SPLIT_MIN_TILES = 1
    M, N, K = shape["B"] * shape["T"], shape["C"], shape["OC"]
    assert matmul.splits_v6(M, N, K)[0] == 3, "the shape must exercise v6's split path"
print(json.dumps([asdict(r) for r in check_op(matmul.SPEC, "cudasim", version=sys.argv[2], shapes=[shape])]))
"""


@pytest.mark.cudasim
@pytest.mark.parametrize("version", ["v4", "v5", "v6"])
def test_v4_matches_pytorch_in_the_simulator_at_an_awkward_shape(version):
    M, N, K = AWKWARD["B"] * AWKWARD["T"], AWKWARD["C"], AWKWARD["OC"]
    assert matmul.splits_v4(M, N, K)[0] == 2, "the shape must exercise the split path"
    proc = run_in_simulator("-c", _SIM_SCRIPT, json.dumps(AWKWARD), version)
    rows = json.loads(proc.stdout)
    assert {r["tensor"] for r in rows} == {"out", "dinp", "dweight", "dbias"}
    assert all(r["ok"] for r in rows), json.dumps(rows, indent=1)


@pytest.mark.cudasim
def test_v4_dbias_as_accurate_as_pytorch_over_4096_rows():
    """The dbias probe (N = 4096 rows in one column sum) in the simulator; dinp and dweight's probes take
    minutes there for v4 (a whole 64 x 64 tile of threads per block), see docs/kernels.md for their figures."""
    rows = {r["version"]: r for r in measure_in_simulator("matmul.dbias", ["v1", "v4"])}
    assert rows["v4"]["ok"] and rows["v4"]["ratio"] < 2, rows
    assert not rows["v1"]["ok"], rows  # the same probe fails a running sum: it can fail


def test_splits_cover_the_reduction_once():
    for M, N, K in [(768, 768, 4096), (768, 768, 8192), (256, 768, 50257), (6, 37, 65), (65, 37, 6),
                    (3072, 768, 4096), (50257, 768, 4096), (1, 1, 1), (5, 5, 0)]:
        S, k_per = matmul.splits_v4(M, N, K)
        assert k_per % matmul.BK == 0 and 1 <= S <= matmul.MAX_SPLITS
        assert S * k_per >= K and (S - 1) * k_per < max(K, 1), (M, N, K, S, k_per)  # no gap, no empty range
    assert matmul.splits_v4(768, 768, 4096)[0] == 2        # GPT-2's 144-tile dweight: split
    assert matmul.splits_v4(3072, 768, 4096)[0] == 1       # 576 tiles fill the GPU alone
    assert matmul.splits_v4(50257, 768, 4096)[0] == 1      # the lm_head


def test_v6_splits_for_whole_waves():
    for M, N, K in [(768, 768, 4096), (2304, 768, 4096), (256, 768, 50257), (6, 37, 65), (65, 37, 600),
                    (50257, 768, 4096), (1, 1, 1), (5, 5, 0)]:
        for slots in (1, 7, 396):
            S, k_per = matmul.splits_v6(M, N, K, slots)
            assert k_per % matmul.BK == 0 and 1 <= S <= matmul.MAX_SPLITS
            assert S * k_per >= K and (S - 1) * k_per < max(K, 1), (M, N, K, slots, S, k_per)
            assert S == 1 or k_per >= matmul.SPLIT_MIN_TILES * matmul.BK
    # GPT-2 124M's dweight at B*T = 4096 on 396 resident blocks (132 SMs x 3): c_attn's 432 tiles would leave a
    # second wave of 36 blocks; 8 ranges make 9 waves of 16 k-tiles (cost 144 against 256)
    assert matmul.splits_v6(2304, 768, 4096, 396) == (8, 512)
    assert matmul.splits_v6(768, 768, 4096, 396)[0] == 8
    assert matmul.splits_v6(3072, 768, 4096, 396)[0] == 2
    assert matmul.splits_v6(50257, 768, 4096, 396)[0] == 1      # 24 full waves: nothing to gain
    assert matmul.splits_v6(4096, 768, 50257, 396)[0] == 1      # the lm_head's dinp: 768 tiles, ~2 waves
    assert matmul.splits_v6(768, 768, 512, 396)[0] == 2         # T = 64: 16 k-tiles, ranges of at least 4


# v7's own shape: 128 x 128 tiles, a thread's rows and columns in two groups 64 apart, parts carried every 4
# k-tiles. B*T = 129 and OC = 130 make the forward 2 x 2 tiles, with a thread's second groups (rows and columns
# 64..127) in use and the last tile 1 wide; C = 17 is two k-tiles, one partial. The backward's reductions
# (K = 130 and 129: 9 k-tiles) split in 2 ranges of 80: the first 5 whole k-tiles (a carry after its 4th, then
# one more tile), the second 4 whose last is partial (it ends right after its carry).
V7_SHAPE = {"B": 1, "T": 129, "C": 17, "OC": 130}


# v7's carry, on a sum it decides: out = sum over C = 129 (9 k-tiles: parts of tiles 1-4, 5-8, then 9) of
# 2^24 (part 1), 1 (part 2), -2^24 (part 3) = 1. acc + part 2 = 2^24 + 1 rounds to 2^24 (float32 has no odd
# integers there); the carried error, 1, starts part 3, which is then 1 - 2^24 exactly, and the epilogue's
# acc + part is 1. Without the carry (part reset to 0) the result is 0, as a plain float32 running sum's is.
CARRY = """
import sys
import numpy as np
from numba import cuda
from gpt2lab.kernels._cudasim import install
install()   # the simulator with aligned shared arrays, as the harness runs it
from gpt2lab.kernels import matmul
inp, weight = np.zeros((1, 1, 129), np.float32), np.zeros((1, 129), np.float32)
for c, (x, w) in {0: (4096.0, 4096.0), 64: (1.0, 1.0), 128: (-4096.0, 4096.0)}.items():
    inp[0, 0, c], weight[0, c] = x, w
out = cuda.to_device(np.zeros((1, 1, 1), np.float32))
matmul.matmul_forward(out, cuda.to_device(inp), cuda.to_device(weight), None, version="v7")
print(float(out.copy_to_host()[0, 0, 0]))
"""


@pytest.mark.cudasim
def test_v7_carries_what_a_part_lost_into_the_next():
    assert matmul.V7_PART_TILES * matmul.V7_BK == 64, "the terms sit at c = 0, 64, 128: one in each part"
    terms = np.float32([2.0 ** 24, 1.0, -(2.0 ** 24)])
    assert (terms[0] + terms[1]) + terms[2] == 0   # float32 loses the 1 without the carry
    assert float(run_in_simulator("-c", CARRY).stdout.split()[-1]) == 1.0


# At v7's shape, in one simulator process (~50 s): v7 against PyTorch (the harness's rule, on fresh buffers), and
# v8 against v7 bit for bit. v8 is v7 in fewer instructions: the same products, in the same order, into the same
# parts and carries, so it must give v7's bits. The backward's split partial sums live in reused scratch: it is
# poisoned (NaN) before each version, or v7's leftovers would stand in for a partial sum v8 failed to write (a
# review found v8 with an epilogue row dropped passing dinp and dweight that way; poisoned, all three fail, and
# so does v8 with its two half-passes swapped).
V7_V8_SCRIPT = """
import json, sys
import numpy as np
from gpt2lab.kernels._cudasim import install
install()
from gpt2lab.kernels import _cuda, matmul
from gpt2lab.kernels.check import judge, references
from gpt2lab.kernels.same_bits import compare
inputs = matmul.SPEC.make_inputs(json.loads(sys.argv[1]), np.random.default_rng(0))
ref, ref32 = references(matmul.SPEC, inputs)
got = {}
for version in ("v7", "v8"):
    _cuda.poison_scratch()
    got[version] = matmul.SPEC.versions["cuda"][version]({k: x.copy() for k, x in inputs.items()})
print(json.dumps({t: {"v7_ok": judge(got["v7"][t], ref32[t], ref[t]).ok,
                      "v8_same": compare(got["v8"][t], got["v7"][t])[0]} for t in ref}))
"""


@pytest.mark.cudasim
def test_v7_matches_pytorch_and_v8_gives_its_bits_across_two_tiles_and_a_carried_part():
    M, N, K = V7_SHAPE["B"] * V7_SHAPE["T"], V7_SHAPE["C"], V7_SHAPE["OC"]
    assert matmul.splits_v7(M, N, K) == (2, 5 * matmul.V7_BK) == matmul.splits_v7(K, N, M)
    assert matmul.V7_PART_TILES == 4, "the shape is chosen to carry a part once in each range"
    rows = json.loads(run_in_simulator("-c", V7_V8_SCRIPT, json.dumps(V7_SHAPE)).stdout.splitlines()[-1])
    assert rows == {t: {"v7_ok": True, "v8_same": True} for t in ("out", "dinp", "dweight", "dbias")}, rows


def test_v7_splits_for_whole_waves_of_its_tiles():
    for M, N, K in [(768, 768, 4096), (2304, 768, 4096), (256, 768, 50257), (65, 37, 600), (1, 1, 1), (5, 5, 0)]:
        S, k_per = matmul.splits_v7(M, N, K, 132)
        assert k_per % matmul.V7_BK == 0 and 1 <= S <= matmul.MAX_SPLITS
        assert S * k_per >= K and (S - 1) * k_per < max(K, 1), (M, N, K, S, k_per)
    # one block an SM (246-249 registers a thread): c_attn's dweight is 18 x 6 = 108 tiles on 132 SMs, so it splits
    # where v5's 432 did not; the lm_head's forward-sized products have waves enough
    assert matmul.splits_v7(2304, 768, 4096, 132)[0] == 6
    assert matmul.splits_v7(50257, 768, 4096, 132)[0] == 1
    assert matmul.splits_v7(4096, 3072, 768, 132)[0] == 1


def test_two_sum_is_exact_whichever_term_is_larger():
    """_cuda.two_sum (v7's carry): s + e == a + b exactly, for terms of any sizes and signs; the naive error
    (a + b) - s, which a plain float32 sum keeps, is 0 in float32 and wrong."""
    from fractions import Fraction

    from gpt2lab.kernels._cuda import two_sum
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(2000) * 10.0 ** rng.integers(-8, 8, 2000)).astype(np.float32)
    b = (rng.standard_normal(2000) * 10.0 ** rng.integers(-8, 8, 2000)).astype(np.float32)
    lost = 0
    for x, y in zip(a, b):
        s, e = two_sum.py_func(x, y)
        exact = Fraction(float(x)) + Fraction(float(y))
        assert s == np.float32(x + y) and Fraction(float(s)) + Fraction(float(e)) == exact, (x, y, s, e)
        lost += e != 0
    assert lost > 1000   # most sums round: the test sees real errors recovered


def test_gemm_v4_refuses_a_split_that_would_lose_the_bias():
    with pytest.raises(ValueError, match="split=True"):
        matmul.gemm_v4(np.zeros((2, 2), np.float32), np.zeros((2, 3), np.float32), False,
                       np.zeros((2, 3), np.float32), False, bias=np.zeros(2, np.float32), split=True)


def test_blocked_versions_are_listed_and_v8_is_the_default():
    assert {"v4", "v5", "v7", "v8", "cublas"} <= set(matmul.CUDA_VERSIONS)
    assert matmul.DEFAULT_VERSION["cuda"] == "v8"  # docs/kernels.md's rule: accurate (v7's bits), fastest on an H200
    with pytest.raises(ValueError, match="version must be one of"):  # numpy arrays: cublas is a CUDA version
        x = np.zeros((1, 2, 3), np.float32)
        matmul.matmul_forward(np.zeros((1, 2, 4), np.float32), x, np.zeros((4, 3), np.float32), None,
                              version="cublas")


@pytest.mark.parametrize("simulated, want", [(False, "v8"), (True, "v5")])
def test_the_simulator_defaults_to_v5_and_a_gpu_to_v8(monkeypatch, simulated, want):
    """v8's 128 x 128 tiles cost the simulator ~4x v5's work at its small shapes, so there the default is v5;
    a version asked for by name is still the one run, v7 included."""
    from gpt2lab.kernels import _validate
    monkeypatch.setattr(_validate.numba_config, "ENABLE_CUDASIM", simulated)
    pick = functools.partial(_validate.pick_version, "matmul_forward", cpu_versions=matmul.CPU_VERSIONS,
                             cuda_versions=matmul.CUDA_VERSIONS, default=matmul.DEFAULT_VERSION)
    assert pick(None, on_device=True) == pick("cuda", on_device=True) == want
    assert pick("v7", on_device=True) == "v7"
    assert pick(None, on_device=False) == "blas"


def _operands(rng, N=7, C=5, OC=9):
    return (rng.standard_normal((N, C)).astype(np.float32), rng.standard_normal((OC, C)).astype(np.float32),
            rng.standard_normal(OC).astype(np.float32), rng.standard_normal((N, OC)).astype(np.float32))


@pytest.mark.parametrize("with_bias", [True, False])
def test_cublas_forward_writes_our_buffer(with_bias):
    inp, weight, bias, _ = _operands(np.random.default_rng(0))
    out = np.full((inp.shape[0], weight.shape[0]), 7.0, np.float32)  # overwritten, not added to
    before = out.ctypes.data
    _cublas.forward(out, inp, weight, bias if with_bias else None)
    want = inp.astype(np.float64) @ weight.T.astype(np.float64) + (bias if with_bias else 0)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    assert out.ctypes.data == before


def test_cublas_backward_accumulates():
    rng = np.random.default_rng(1)
    inp, weight, _, dout = _operands(rng)
    dinp, dweight, dbias = (rng.standard_normal(s).astype(np.float32) for s in (inp.shape, weight.shape, (9,)))
    start = [a.copy() for a in (dinp, dweight, dbias)]
    _cublas.backward(dinp, dweight, dbias, dout, inp, weight)
    d, x, w = (a.astype(np.float64) for a in (dout, inp, weight))
    np.testing.assert_allclose(dinp, start[0] + d @ w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dweight, start[1] + d.T @ x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dbias, start[2] + d.sum(0), rtol=1e-5, atol=1e-5)
    _cublas.backward(None, None, dbias, dout, None, None)  # one gradient alone, the others skipped
    np.testing.assert_allclose(dbias, start[2] + 2 * d.sum(0), rtol=1e-5, atol=1e-5)


def test_cublas_wraps_without_copying_and_keeps_full_precision():
    import torch
    a = np.zeros((3, 4), np.float32)
    t = _cublas.as_torch(a)
    assert t.data_ptr() == a.ctypes.data
    with pytest.raises(TypeError, match="cublas: expected"):
        _cublas.as_torch([1.0, 2.0])
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")  # TF32 allowed outside ...
    try:
        with _cublas.ordered(on_gpu=False):
            assert torch.get_float32_matmul_precision() == "highest"  # ... never inside
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


def test_cublas_puts_back_the_per_backend_precision_too():
    """Newer torch keeps TF32 per backend (backends.cuda.matmul.fp32_precision), which the legacy getter does not
    see: TF32 turned off that way must still be off after a cuBLAS call, not switched back on by the restore."""
    import torch
    matmul = torch.backends.cuda.matmul
    if not hasattr(matmul, "fp32_precision"):
        pytest.skip("this torch has no per-backend fp32 precision")
    before = (torch.get_float32_matmul_precision(), matmul.fp32_precision)
    torch.set_float32_matmul_precision("high")
    matmul.fp32_precision = "ieee"
    try:
        with _cublas.ordered(on_gpu=False):
            pass
        assert matmul.fp32_precision == "ieee"
    finally:
        torch.set_float32_matmul_precision(before[0])
        matmul.fp32_precision = before[1]
