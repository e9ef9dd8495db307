#!/usr/bin/env bash
# The short GPU call that follows tools/gpu_checks.sh when defaults change on its figures: it times the new
# defaults and trains on them with live parity, nothing else (no verify, no op bench, no ladder: those are the
# full script's, and its record stays the lesson's).
#
#   bash tools/gpu_checks.sh prepare      here, as for the full script (the same .whl/)
#   bash tools/gpu_recheck.sh run         there: ~6 minutes at most, every file straight into $OUT (or build/gpu)
#
# At most 8 files come back from a device call, so this writes exactly 8, each step's stderr into one log.txt
# (the full script writes ~20: run it with OUT=/tmp/g and tar the folder into $OUT). Each step is killed 5 s after
# its limit (`timeout -k 5`; its gentle stop once overran by 37 s), so the limits and their 5 s add up to 395 s:
#   small.jsonl        the small config, 300 steps at B=4, T=64, live parity every 40th step, on the default
#                      path (on a GPU the fused one): parity on the GPU, and on the fused path              50 s
#   gpt2.jsonl         the 124M config, 10 steps at B=4, T=1024, live parity every 5th step                 45 s
#   steps1024.json     the 124M step at B=4, T=1024 on the defaults (issue 14's headline goal), and where
#                      its GPU time goes, kernel by kernel, on each path (--profile)                       80 s
#   steps64.json       tiny and gpt2 at B=8, T=64 (tiny's goal is at B=8)                                  60 s
#   (log.txt)          tiny again on matmul v5, the default before v7: is the 128 x 128 tile worse on
#                      tiny's small products? (the table and the JSON go into the log)                    30 s
#   cublas1024.json    the 124M step at B=4, T=1024 with --matmul cublas                                   45 s
#   accuracy.txt       the long-sum probes of the matmul and of flash attention, PyTorch float32 on the GPU 50 s
# plus summary.txt (each step's exit status) and log.txt. tests/test_gpu_checks.py checks these command lines
# as it checks the full script's.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
run)
    out=${OUT:-build/gpu}; mkdir -p "$out"; log="$out/log.txt"
    source tools/gpu_env.sh   # the wheels installed, gpt2lab on PATH
    timeout -k 5 50 gpt2lab train --backend numba --device cuda --config small --steps 300 --batch 4 --seq 64 \
        --lr 3e-3 --warmup 20 --verify-every 40 --eval-every 0 --sample-tokens 0 --quiet --overwrite \
        --out /tmp/runs/small --json-log "$out/small.jsonl" >> "$log" 2>&1
    echo "small 300 steps, parity every 40: exit $?" | tee -a "$out/summary.txt"
    timeout -k 5 45 gpt2lab train --backend numba --device cuda --config gpt2 --steps 10 --batch 4 --seq 1024 \
        --verify-every 5 --eval-every 0 --sample-tokens 0 --quiet --overwrite \
        --out /tmp/runs/gpt2 --json-log "$out/gpt2.jsonl" >> "$log" 2>&1
    echo "gpt2 10 steps, parity every 5: exit $?" | tee -a "$out/summary.txt"
    timeout -k 5 80 gpt2lab bench --device cuda --json --no-ops --no-ladder --no-tokenizer --steps gpt2 --batch 4 \
        --seq 1024 --reps 3 --profile > "$out/steps1024.json" 2>> "$log"
    echo "steps T=1024: exit $?" | tee -a "$out/summary.txt"
    timeout -k 5 60 gpt2lab bench --device cuda --json --no-ops --no-ladder --no-tokenizer --steps tiny,gpt2 --batch 8 \
        --seq 64 --reps 5 > "$out/steps64.json" 2>> "$log"
    echo "steps T=64: exit $?" | tee -a "$out/summary.txt"
    timeout -k 5 30 gpt2lab bench --device cuda --json --no-ops --no-ladder --no-tokenizer --steps tiny --batch 8 \
        --seq 64 --reps 5 --matmul v5 >> "$log" 2>&1
    echo "steps tiny T=64 --matmul v5: exit $?" | tee -a "$out/summary.txt"
    timeout -k 5 45 gpt2lab bench --device cuda --json --no-ops --no-ladder --no-tokenizer --steps gpt2 --batch 4 \
        --seq 1024 --reps 3 --matmul cublas > "$out/cublas1024.json" 2>> "$log"
    echo "steps T=1024 --matmul cublas: exit $?" | tee -a "$out/summary.txt"
    timeout -k 5 50 python3 -m gpt2lab.kernels.accuracy --device cuda --probe matmul.dinp --probe matmul.dweight \
        --probe matmul.dbias --probe attention.flash > "$out/accuracy.txt" 2>> "$log"
    echo "accuracy: exit $?" | tee -a "$out/summary.txt" ;;
*)
    echo "usage: bash tools/gpu_recheck.sh run (after: bash tools/gpu_checks.sh prepare)" >&2; exit 2 ;;
esac
