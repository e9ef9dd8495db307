"""The kernel versions `gpt2lab train` and `gpt2lab bench` can name on the command line.

Literal lists, so building a parser imports neither numba nor torch; tests/test_matmul_choice.py checks them
against the kernels' own (kernels/matmul.py's CUDA_VERSIONS, kernels/attention.py's FLASH_CUDA_VERSIONS).
"""
# --matmul: "numba" (our default version), one of our CUDA versions by name (to time a candidate before it is
# the default), or "cublas" (cuBLAS on the same device memory).
MATMULS = ("numba", "v1", "v2", "v3", "v4", "v5", "cublas")
# --flash: the fused path's flash attention version on the GPU (not given: its default).
FLASHES = ("v4", "v5")
