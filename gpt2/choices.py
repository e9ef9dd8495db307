"""The kernel versions `gpt2lab train` and `gpt2lab bench` can name on the command line.

Literal lists, so building a parser imports neither numba nor torch; tests/test_matmul_choice.py checks them
against the kernels' own (kernels/matmul.py's CUDA_VERSIONS, kernels/attention.py's FLASH_CUDA_VERSIONS).
"""
# --matmul: "numba" (our default version), one of our CUDA versions by name (to time a candidate before it is
# the default), or "cublas" (cuBLAS on the same device memory).
MATMULS = ("numba", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "cublas")
# --flash: the fused path's flash attention version on the GPU (not given: its default).
FLASHES = ("v4", "v5", "v6")
# KernelGPT2's two paths, as bench's step rows name the default one ("default_path")
PATHS = ("fused", "per-op")


def default_fused(backend: str, device: str) -> bool:
    """Whether a new `gpt2lab train` run (neither --fused nor --no-fused given) takes KernelGPT2's fused path:
    on a GPU, yes -- the 124M step at B=4, T=1024 on an H200 took 265 ms fused and 1502 ms on the per-op path,
    both on matmul v5, against PyTorch eager's 102 (docs/figures.md) -- and on the CPU, no: the per-op path is
    the one the CPU's speed goal was measured on. Only the numba backend has the two paths."""
    return backend == "numba" and device == "cuda"


def default_path(backend: str, device: str) -> str:
    """default_fused's answer by name, one of PATHS."""
    return PATHS[0] if default_fused(backend, device) else PATHS[1]
