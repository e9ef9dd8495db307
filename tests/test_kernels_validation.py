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


def test_every_kernel_module_names_its_versions_one_way():
    """Every op module lists CPU_VERSIONS, CUDA_VERSIONS (strings "v1", "v2", ..., or the vendor library a
    version calls, "cublas", as the CPU's "blas") and one DEFAULT_VERSION {"cpu", "cuda"} among them (and, where
    the simulator's differs, "cudasim": matmul's); its SPEC
    verifies exactly those versions (plus extra entry points' rows)."""
    import importlib
    import re

    from gpt2lab.kernels.check import OPS
    for op in OPS:
        mod = importlib.import_module(f"gpt2lab.kernels.{op}")
        assert all(re.fullmatch(r"v\d+|cublas", v) for v in mod.CUDA_VERSIONS), op
        assert not set(mod.CPU_VERSIONS) & {"cpu", "cuda"}, op
        assert set(mod.DEFAULT_VERSION) <= {"cpu", "cuda", "cudasim"}, op
        for kind in ("cuda", "cudasim"):
            cuda_default = mod.DEFAULT_VERSION.get(kind, mod.DEFAULT_VERSION["cuda"])
            for v in cuda_default.values() if isinstance(cuda_default, dict) else [cuda_default]:
                assert v in mod.CUDA_VERSIONS, op
        assert mod.DEFAULT_VERSION["cpu"] in mod.CPU_VERSIONS, op
        assert set(mod.CPU_VERSIONS) <= set(mod.SPEC.versions["cpu"]), op
        assert set(mod.CUDA_VERSIONS) <= set(mod.SPEC.versions["cuda"]), op


def test_a_version_for_the_other_device_is_refused():
    from gpt2lab.kernels.matmul import matmul_forward
    inp, weight = np.zeros((1, 2, 4), np.float32), np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"matmul_forward: version must be one of \('loops', 'blas'\) for cpu arrays"):
        matmul_forward(np.zeros((1, 2, 3), np.float32), inp, weight, None, version="v3")
    with pytest.raises(ValueError, match="version must be one of"):
        matmul_forward(np.zeros((1, 2, 3), np.float32), inp, weight, None, version=3)  # the old int names


def test_every_kernel_file_has_one_shape():
    """docs/kernels.md: math and version list (docstring) -> PyTorch reference -> CPU -> CUDA -> entry
    points -> verification (SPEC), in that order, in every op module."""
    import importlib
    import inspect

    from gpt2lab.kernels.check import OPS
    banner = "# " + "-" * 64 + " "
    order = ("the PyTorch reference", "CPU", "CUDA", "public entry point", "verification")
    for op in OPS:
        mod = importlib.import_module(f"gpt2lab.kernels.{op}")
        assert "Versions (" in mod.__doc__, op
        sections = [line[len(banner):] for line in inspect.getsource(mod).splitlines() if line.startswith(banner)]
        firsts = [next((i for i, s in enumerate(sections) if s.startswith(part)), None) for part in order]
        assert None not in firsts and firsts == sorted(firsts), (op, sections)
        source = inspect.getsource(mod)
        assert source.index("\ndef reference(") < source.index(banner + "CPU"), op
