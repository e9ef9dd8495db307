#!/usr/bin/env bash
# The GPU call for the candidates: matmul v7 (128 x 128 tiles, 8 x 8 outputs a thread, double-buffered) and v6
# (v5's kernels, the backward split for whole waves), against the default (v5) and cuBLAS; flash attention v6
# (v5 with a lean loader for the tiles inside the head). Never run on a GPU before this script: first that they
# are right there (verify, and the sanitizers on matmul v7: its double buffering is a new barrier pattern), then
# how fast, then the 124M step on matmul v7 with flash v5 and v6, then the matmuls' long sums.
# Ran once, on an H100 on 2026-11-27 (docs/figures.md): every step inside its limit (326 s), v7 and flash v6 won
# and are the defaults now. Kept as the pattern for the next candidates' call.
#
#   bash tools/gpu_checks.sh prepare        here, as for the full script (the same .whl/)
#   bash tools/gpu_candidates.sh run        there: ~10 minutes at most, every file straight into $OUT
#
# A device call returns at most 8 files: this writes exactly 8 (each step's stderr into log.txt).
# The limits add up to 575 s (the wheel install before them took ~10 s on an H200). That leaves ~15 s of a 600 s
# call: if the call's limit cuts the last step (the accuracy probes), every file written before it still comes back:
#   verify.txt         gpt2lab verify --device cuda: matmul v7, attention v6 (40 s each); then v7's verify at one
#                      small shape under compute-sanitizer racecheck (shared-memory hazards: 60 s) and
#                      memcheck (40 s), their summary lines copied into summary.txt                        180 s
#   ladder.json        the matmul ladder for v5, v6, v7 and cuBLAS at GPT-2's five shapes: TFLOP/s, % of
#                      cuBLAS, each product's ms (forward, dinp, dweight)                                  80 s
#   steps1024_v7.json  the 124M step at B=4, T=1024 with --matmul v7 against torch (issue 14's headline goal,
#                      <= 1.5x; v5: 2.59x on an H200), and where its GPU time goes, kernel by kernel        80 s
#   steps1024_v7_flash6.json  the same with --matmul v7 --flash v6, profiled: flash v6's kernels beside v5's
#                      in the first file's profile (flash v5 was 13% of the step on the H200; the profiled
#                      step on the H200's defaults took ~51 s, compiles included)                           80 s
#   steps64_tiny.json  the tiny step at B=8, T=64 on the defaults against torch (the tiny goal, <= 1.0x; 2.00x on
#                      the H200 before prepared launches and the cheaper views and checks)                  40 s
#   host_tiny.txt      where the tiny step's host time goes (gpt2/host_profile.py: cProfile of 20 steps at B=8,
#                      T=64 on the default kernels, grouped ours / numba / cuda.core): the tiny goal is host-bound,
#                      ~127 us of host time a launch on the H200 against ~15 us for numba's bare launch. Twice:
#                      with prepared launches (kernels/_cuda.py, the default) and with numba's own     2 x 40 s
#   (verify.txt)       last, the matmul's long-sum probes, v5 v6 v7 and cuBLAS, PyTorch float32 on the GPU  35 s
# plus summary.txt (each step's exit status) and log.txt. A candidate that wins goes into DEFAULT_VERSION by the
# rule of docs/kernels.md (as accurate as PyTorch, then the fastest measured); then tools/gpu_recheck.sh.
# tests/test_gpu_checks.py checks these command lines as it checks the full script's.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
run)
    out=${OUT:-build/gpu}; mkdir -p "$out"; log="$out/log.txt"
    source tools/gpu_env.sh   # the wheels installed, gpt2lab on PATH
    shape='{"B": 1, "T": 257, "C": 33, "OC": 257}'
    timeout 40 gpt2lab verify --device cuda --op matmul --version v7 >> "$out/verify.txt" 2>> "$log"
    echo "verify matmul v7: exit $?" | tee -a "$out/summary.txt"
    timeout 40 gpt2lab verify --device cuda --op attention --version v6 >> "$out/verify.txt" 2>> "$log"
    echo "verify attention v6: exit $?" | tee -a "$out/summary.txt"
    # the sanitizers at one small shape with every path of v7 (3 x 3 tiles, partial edges, interior tiles, a
    # split, carried parts); --error-exitcode: a hazard or an error fails the step (else it exits as verify does)
    timeout 60 compute-sanitizer --tool racecheck --error-exitcode 99 --launch-timeout 0 --print-limit 20 \
        gpt2lab verify --device cuda --op matmul --version v7 --shape "$shape" >> "$out/verify.txt" 2>&1
    echo "racecheck v7: exit $?" | tee -a "$out/summary.txt"
    timeout 40 compute-sanitizer --tool memcheck --error-exitcode 99 --launch-timeout 0 --print-limit 20 \
        gpt2lab verify --device cuda --op matmul --version v7 --shape "$shape" >> "$out/verify.txt" 2>&1
    echo "memcheck v7: exit $?" | tee -a "$out/summary.txt"
    grep -E "(ERROR|RACECHECK) SUMMARY" "$out/verify.txt" | tee -a "$out/summary.txt"
    timeout 80 gpt2lab bench --device cuda --json --no-ops --no-tokenizer --steps '' --ladder-version v5 \
        --ladder-version v6 --ladder-version v7 --reps 3 > "$out/ladder.json" 2>> "$log"
    echo "ladder v5 v6 v7 cublas: exit $?" | tee -a "$out/summary.txt"
    timeout 80 gpt2lab bench --device cuda --json --no-ops --no-ladder --no-tokenizer --steps gpt2 --batch 4 \
        --seq 1024 --reps 3 --matmul v7 --profile > "$out/steps1024_v7.json" 2>> "$log"
    echo "steps T=1024 --matmul v7: exit $?" | tee -a "$out/summary.txt"
    timeout 80 gpt2lab bench --device cuda --json --no-ops --no-ladder --no-tokenizer --steps gpt2 --batch 4 \
        --seq 1024 --reps 3 --matmul v7 --flash v6 --profile > "$out/steps1024_v7_flash6.json" 2>> "$log"
    echo "steps T=1024 --matmul v7 --flash v6: exit $?" | tee -a "$out/summary.txt"
    timeout 40 gpt2lab bench --device cuda --json --no-ops --no-ladder --no-tokenizer --steps tiny --batch 8 --seq 64 \
        --reps 5 > "$out/steps64_tiny.json" 2>> "$log"
    echo "steps tiny T=64: exit $?" | tee -a "$out/summary.txt"
    timeout 40 python3 -m gpt2lab.gpt2.host_profile_cli --device cuda --config tiny --batch 8 --seq 64 --steps 20 \
        --top 40 >> "$out/host_tiny.txt" 2>> "$log"
    echo "host profile, tiny: exit $?" | tee -a "$out/summary.txt"
    timeout 40 env GPT2LAB_PREPARED_LAUNCH=0 python3 -m gpt2lab.gpt2.host_profile_cli --device cuda --config tiny \
        --batch 8 --seq 64 --steps 20 --top 40 >> "$out/host_tiny.txt" 2>> "$log"
    echo "host profile, tiny, numba's own launches: exit $?" | tee -a "$out/summary.txt"
    timeout 35 python3 -m gpt2lab.kernels.accuracy --device cuda --probe matmul.dinp --probe matmul.dweight \
        --version v5 --version v6 --version v7 --version cublas >> "$out/verify.txt" 2>> "$log"
    echo "accuracy: exit $?" | tee -a "$out/summary.txt" ;;
*)
    echo "usage: bash tools/gpu_candidates.sh run (after: bash tools/gpu_checks.sh prepare)" >&2; exit 2 ;;
esac
