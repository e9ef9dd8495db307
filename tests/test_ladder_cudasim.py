"""The matmul ladder's CUDA products, each timed on its own (kernels/bench.py `_ladder_parts`), run in numba's
CUDA simulator (own process): forward, dinp and dweight (+ dbias) give what one forward + backward through the
entry points gives, so the per-product times of `gpt2lab bench --device cuda --ladder` time the real work.
"""
import json
import textwrap

import pytest
from simulated import run_in_simulator

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from numba import config
    assert config.ENABLE_CUDASIM, "the simulator must be on in this process"
    from gpt2lab.kernels._cudasim import install
    install()   # v5's aligned shared arrays and its shuffles, as the harness has them
    from gpt2lab.kernels import bench
    from gpt2lab.kernels import matmul as mm
    N, C, OC = 3, 5, 9
    parts = bench._ladder_parts(bench.Case("cuda"), {"name": "c_fc", "N": N, "C": C, "OC": OC}, "v5")
    for fn in parts.values():
        fn()
    # the inputs _ladder_parts made (the same seeded draws, in its order), and the results its closures hold:
    # each closure's device arrays, told apart by shape (forward: out (1, N, OC); dinp: dx (N, C); dweight:
    # dw (OC, C), db (OC,))
    rng = bench._rng()
    x, w, dout, b = (bench._f32(rng, 1, N, C), bench._f32(rng, OC, C, scale=0.02), bench._f32(rng, 1, N, OC),
                     bench._f32(rng, OC))
    cells = {name: [c.cell_contents for c in fn.__closure__ or () if hasattr(c.cell_contents, "copy_to_host")]
             for name, fn in parts.items()}
    held = {name: {tuple(a.shape): a.copy_to_host() for a in arrays} for name, arrays in cells.items()}
    assert all(len(held[n]) == len(cells[n]) for n in cells), "two arrays of one closure share a shape"
    x2, d2 = x.reshape(N, C).astype(np.float64), dout.reshape(N, OC).astype(np.float64)
    want = {("forward", (1, N, OC)): (x2 @ w.T + b).reshape(1, N, OC), ("dinp", (N, C)): d2 @ w,
            ("dweight", (OC, C)): d2.T @ x2, ("dweight", (OC,)): d2.sum(0)}
    err = {f"{k[0]} {k[1]}": float(np.abs(held[k[0]][k[1]] - v).max()) for k, v in want.items()}
    print(json.dumps({"parts": list(parts), "err": err}))
""")


@pytest.mark.cudasim
def test_the_ladders_products_run_one_at_a_time_on_the_cuda_path():
    proc = run_in_simulator("-c", SCRIPT, timeout=300)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["parts"] == ["forward", "dinp", "dweight"]
    assert len(out["err"]) == 4 and max(out["err"].values()) < 1e-5, out["err"]
