#!/usr/bin/env bash
# The GPU call for the candidates, before a full `tools/gpu_checks.sh run`: short, so that both fit one session's
# 15 minutes of device time (this ~4 min, the full checks ~10). Written for matmul v8, v7's sums (its bits) in
# 11-18% fewer instructions a k-tile by ptxas's count (kernels/matmul.py), before any GPU had run it: is it right
# there, is it faster than v7 product by product, and what does it make of the 124M step? On 2026-11-27 the full
# checks on an H200 answered that instead (the machine's start left time for one of the two calls; gpu_checks.sh
# then had v8's steps): v8 became the default. For the next candidate, name it in place of v8, and the version it
# is measured against in place of v7.
# The call before (2026-11-27, an H100: v7, v6 and flash v6 against v5, with the sanitizers and the long sums; 326 s)
# made v7 and flash v6 the defaults; docs/figures.md has its figures.
#
#   bash tools/gpu_checks.sh prepare        here, as for the full script (the same .whl/)
#   bash tools/gpu_candidates.sh run        there, every file straight into $OUT
#
# Each step stops at its limit (SIGTERM: bench prints the rows it finished) and is killed 5 s later (`timeout -k 5`).
# The limits add up to 225 s (the wheel install before them: ~10 s on an H200, over a minute on a slow H100 boot):
#   verify.txt         gpt2lab verify --device cuda --op matmul --version v8 at verify's three GPU shapes
#                      (v7 took < 40 s with its compiles on an H100)                                        45 s
#                      then v8 against v7 bit for bit at the same shapes (--same-as v7; the simulator has no
#                      fused multiply-add, so only a GPU says ptxas kept v7's bits; it compiles v7 and v8
#                      afresh)                                                                                40 s
#   ladder.json        the matmul ladder for v7, v8 and cuBLAS at GPT-2's five shapes: TFLOP/s, % of cuBLAS,
#                      each product's ms (forward, dinp, dweight: the instruction counts predict -11%, -16%,
#                      -18% if v7 is bound by instruction issue)                                              55 s
#   steps1024_v8.json  the 124M step at B=4, T=1024 with --matmul v8 against torch (the 1.5x goal; on the
#                      defaults 1.48x and 1.54x on two H100 boots), profiled kernel by kernel                85 s
# plus summary.txt (each step's exit status) and log.txt. A candidate that wins becomes the default by the rule of
# docs/kernels.md (as accurate as PyTorch, then the fastest measured: v8 has v7's bits, whose long sums an H100
# measured): set matmul.DEFAULT_VERSION["cuda"], commit, `bash tools/gpu_checks.sh prepare` again (the project
# wheel carries the code), then the full `tools/gpu_checks.sh run` records it. A warm machine is given back after
# ~30 s idle, so have that edit ready before this call returns. The full checks time v8 in their ladder and verify
# it whatever the default is. tests/test_gpu_checks.py checks these command lines as it checks the full script's.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
run)
    out=${OUT:-build/gpu}; mkdir -p "$out"; log="$out/log.txt"
    source tools/gpu_env.sh   # the wheels installed, gpt2lab on PATH
    timeout -k 5 40 gpt2lab verify --device cuda --op matmul --version v8 >> "$out/verify.txt" 2>> "$log"
    echo "verify matmul v8: exit $?" | tee -a "$out/summary.txt"
    timeout -k 5 35 gpt2lab verify --device cuda --op matmul --version v8 --same-as v7 >> "$out/verify.txt" 2>> "$log"
    echo "matmul v8 same bits as v7: exit $?" | tee -a "$out/summary.txt"
    timeout -k 5 50 gpt2lab bench --device cuda --json --no-ops --no-tokenizer --steps '' --ladder-version v7 \
        --ladder-version v8 --reps 3 > "$out/ladder.json" 2>> "$log"
    echo "ladder v7 v8 cublas: exit $?" | tee -a "$out/summary.txt"
    timeout -k 5 80 gpt2lab bench --device cuda --json --no-ops --no-ladder --no-tokenizer --steps gpt2 --batch 4 \
        --seq 1024 --reps 3 --matmul v8 --profile > "$out/steps1024_v8.json" 2>> "$log"
    echo "steps T=1024 --matmul v8: exit $?" | tee -a "$out/summary.txt" ;;
*)
    echo "usage: bash tools/gpu_candidates.sh run (after: bash tools/gpu_checks.sh prepare)" >&2; exit 2 ;;
esac
