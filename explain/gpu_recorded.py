"""GPU figures recorded on a real GPU, kept as data so a lesson can show them on a machine without one.

Each record says where and when it was measured and on what code. Nothing here is computed: a new run on a
GPU (`bash tools/gpu_checks.sh run`, or `gpt2lab bench --device cuda --profile --json` turned into a record by
gpu_speed.record_from_bench) adds a record; the lesson shows the newest one and says which. docs/figures.md
has the same figures as tables. The record below predates the per-kernel profile ("profile"), the per-op
rates ("op_rates", "peaks") and the matmul ladder: it has none of them, and none may be added by hand.
"""

H100_2026_11_26 = {
    "device": "one NVIDIA H100 (80 GB)",
    "date": "2026-11-26",
    "software": "numba 0.68, numba-cuda 0.30.4, torch 2.11 (CUDA 13.0); fp32, TF32 off; "
                "torch eager with fused AdamW",
    "code": "gpt2lab as of that day: the first CUDA run, before the accurate CUDA defaults and before "
            "any kernel written for speed (issue 14)",
    # one training step (forward, backward, AdamW), same init and batches; memory: ours = the GPU memory in
    # use after the step, torch = its peak allocated
    "steps": [
        {"config": "tiny", "B": 8, "T": 64, "ours_ms": 38.4, "torch_ms": 6.3, "ours_mib": 977, "torch_mib": 559},
        {"config": "small", "B": 8, "T": 256, "ours_ms": 136.8, "torch_ms": 15.6, "ours_mib": 3482,
         "torch_mib": 2355},
        {"config": "gpt2", "B": 4, "T": 64, "ours_ms": 121.5, "torch_ms": 21.7, "ours_mib": 4096,
         "torch_mib": 2355},
        {"config": "gpt2", "B": 4, "T": 1024, "ours_ms": 1717.0, "torch_ms": 108.0, "ours_mib": 15155,
         "torch_mib": 9523},
    ],
    # `gpt2lab bench --device cuda`: forward + backward of each op at GPT-2 124M's shapes, ours / torch
    "op_ratio": {
        "T": (64, 256), "B": 4,
        "encoder": (0.33, 0.31), "layernorm": (1.86, 2.04), "matmul": (1.82, 4.25),
        "lm_head matmul": (6.0, 6.6), "attention": (2.2, 10.8), "gelu": (1.65, 1.70),
        "residual": (1.84, 1.88), "crossentropy": (2.1, 1.1), "adamw": (0.40, None),   # AdamW does not depend on T: measured once
    },
    # what one kernel launch costs on the host (a 1024-element kernel, mean of 5000 launches)
    "launch_us": {
        "numba, lazy @cuda.jit, 1 argument": 26.8,
        "numba, lazy @cuda.jit, 6 arguments": 34.6,
        "numba, explicit signature": 16.7,
        "numba, explicit signature, launcher reused": 15.1,
        "numba, a torch tensor passed in": 32.5,
        "numba, cuda.as_cuda_array each call": 50.4,
        "torch, one eager op": 6.2,
    },
    # GPT-2 124M, B=4, T=1024: ~3.5 TFLOP per step (forward + backward); the rate each side reached
    "tflops": {"step_tflop": 3.5, "torch": 33.0, "ours": 2.0},
    "peak_tflops_fp32": 67.0,   # NVIDIA's data sheet for the H100 SXM (not measured)
}

RECORDS = [H100_2026_11_26]


def latest() -> dict:
    """The newest record."""
    return max(RECORDS, key=lambda r: r["date"])
