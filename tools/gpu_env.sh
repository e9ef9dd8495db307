# Sourced by the `run` branch of every tools/gpu_*.sh script, on the GPU machine, from the project root: the
# project and what the GPU image lacks installed from .whl/ (bash tools/gpu_checks.sh prepare builds it here),
# and a `gpt2lab` program on PATH. `timeout` runs a program, never a shell function: gpt2lab is a file.
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS=0 PYTHONUNBUFFERED=1
bin=/tmp/gpt2lab-bin; mkdir -p "$bin"
printf '#!/bin/sh\nexec python3 -m gpt2lab.gpt2.cli "$@"\n' > "$bin/gpt2lab" && chmod +x "$bin/gpt2lab"
export PATH="$bin:$PATH:/usr/local/cuda/bin"   # the last: compute-sanitizer, where the image has not put it
