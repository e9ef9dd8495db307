# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 8: Training GPT-2 on our own kernels, checked live against PyTorch
#
# *Widgets and pictures appear when you run the cells. After reopening a notebook, run it again
# (Run → Run All Cells): a widget that says "model not found" is waiting for that.*
#
# Lessons 1–5 built every piece: tokens, embeddings, attention, layernorm, backprop. Now they run together.
# A training step is **forward** (the loss), **backward** (every gradient) and an **AdamW update**, all on
# our numba kernels, while a PyTorch GPT-2 holding the very same parameters takes the same batch, and every
# activation and gradient of every layer is compared. If a kernel were wrong, you would see which one, at once.
#
# Our running example, `"To be, or not to be: that is the question."`, is what the model will learn to continue.

# %%
import numpy as np
from IPython.display import HTML, display

from gpt2lab.datasets import gpt2_encoding, load_tokens
from gpt2lab.explain.palette import RUNNING_EXAMPLE
from gpt2lab.gpt2 import GPTConfig, OptimConfig, RunConfig, TorchBackend
from gpt2lab.gpt2.kernel_backend import NumbaBackend
from gpt2lab.gpt2.parity import ParityMonitor
from gpt2lab.widgets.dashboard import TrainingDashboard

config = GPTConfig.preset("tiny")
data = load_tokens("shakespeare")
print(config)
print(f"{config.num_params():,} parameters; {len(data.train):,} training tokens")

# %% [markdown]
# ## 1. The math of one step
#
# The loss is the mean cross-entropy of the next token: $L = -\frac{1}{BT}\sum_{b,t} \log p_{b,t}[y_{b,t}]$.
# Backward sends $\partial L/\partial \text{logits} = (p - \text{onehot}(y)) / BT$ down through every layer
# (lesson 5). Then **AdamW** moves each parameter $\theta$ with its gradient $g$ at step $t$:
#
# $$\theta \leftarrow \theta - \eta\,\lambda\,\theta,\quad m \leftarrow \beta_1 m + (1-\beta_1) g,\quad
#   v \leftarrow \beta_2 v + (1-\beta_2) g^2,\quad
#   \theta \leftarrow \theta - \eta\,\frac{m/(1-\beta_1^t)}{\sqrt{v/(1-\beta_2^t)} + \epsilon}$$
#
# $m$ and $v$ are running means of the gradient and its square; dividing by $1-\beta^t$ undoes their start
# at zero. The weight decay $\lambda$ acts on the matrices only, never on layernorm gains or biases.
#
# ## 2. The reference step in PyTorch, and ours beside it
# Both backends take the same batch from the same initial weights (seed 0): the losses agree.

# %%
rng = np.random.default_rng(0)
x, y = data.batch("train", 4, 64, rng)
ours, reference = NumbaBackend(config, OptimConfig(), seed=0), TorchBackend(config, OptimConfig(), seed=0)
print(f"loss, numba kernels: {ours.loss_and_grads(x, y):.6f}")
print(f"loss, PyTorch:       {reference.loss_and_grads(x, y):.6f}")

# %% [markdown]
# ## 3. One step checked op by op
# `ParityMonitor.verify_step` runs a float64 PyTorch GPT-2 with our parameters on the same batch, then our
# step, and compares every activation (fwd), every gradient (bwd) and every parameter after AdamW (step),
# op by op and layer by layer. The PyTorch side is float64, so the error you see is our float32 rounding alone.

# %%
monitor = ParityMonitor(ours.model)
report = monitor.verify_step(x, y, lr=1e-3)
summary = report.summary()
print(f"step {summary['step']}: {summary['checked']} tensors checked, {summary['failed']} failed")
for op, worst in summary["worst"].items():
    print(f"  {op:13s} " + "  ".join(f"{d}: ours/torch32 {e:.2g}" for d, e in worst.items()))
assert report.ok, "a kernel disagrees with PyTorch"

# %%
# The three tensors closest to failing: ours/torch32 is our error in units of PyTorch float32's own
# error on the same step (a tensor fails above K = 16)
for r in sorted(report.rows, key=lambda r: r.ratio, reverse=True)[:3]:
    print(r.describe())

# %% [markdown]
# ## 4. Play: train it and watch
# The dashboard trains the kernel-backed GPT-2 in a background thread (the notebook stays responsive) and
# checks every 10th step against PyTorch: the loss curves, tokens/s, the parity table (op × forward/backward,
# green when ours/torch32 <= 16) and a generated sample all update as it goes. The cell below starts a short
# run (the same as pressing **Start**); **Stop** ends a run after the current step and leaves a checkpoint.
# Then it is yours: set `steps`, the learning rate `lr`, the `batch` size and how often to verify, and press
# Start for a fresh model. The learning rate starts low and warms up over 10 steps: at batch 4 a full 3e-3
# from the first step overshoots, and the loss jumps back up instead of falling.

# %%
run = RunConfig(steps=30, batch=4, seq=64, lr=1e-3, warmup=10, eval_every=10, eval_batches=2, sample_tokens=16)
dash = TrainingDashboard(title="tiny GPT-2 on the numba kernels", run=run, verify_every=10, out="runs/lesson06",
                         make_backend=lambda: NumbaBackend(config, OptimConfig(), seed=1337), data=data,
                         encoding=gpt2_encoding())
display(dash)
thread = dash.start_from_controls()

# %%
# Wait for the run (in your own session you can keep working while it trains)
result = dash.join()
assert dash.error is None, dash.error
print(f"step {result.step}: train loss {result.train_loss:.3f}, val loss {result.val_loss:.3f}, "
      f"{result.tokens_per_s:,.0f} tokens/s")
parity = [r["parity"]["summary"] for r in dash.records if "parity" in r]
print(f"{len(parity)} verified steps, all OK: {all(p['ok'] for p in parity)}")
assert parity and all(p["ok"] for p in parity)

# %% [markdown]
# ## 5. Watch: what the model says as it learns
# The course model (lesson 2 trained it once and cached it) kept a frame every 50 steps. Here is the same
# prompt continued by each frame, same random seed, so every change comes from the weights.

# %%
from gpt2lab.explain.samples import samples_html, samples_over_training
from gpt2lab.gpt2 import course_checkpoints
from gpt2lab.gpt2.course import course_dir

frames = course_checkpoints()
shown = [f for k, f in enumerate(frames) if k % 3 == 0 or k == len(frames) - 1]   # every third, and the last once
samples = samples_over_training(shown, "HAMLET:\nTo be, or not to be", max_new_tokens=20)
display(HTML(samples_html("HAMLET:\nTo be, or not to be", samples)))

# %%
# The course run's own log, drawn by the same dashboard, after the fact
TrainingDashboard.from_log(course_dir() / "log.jsonl", title="course model (PyTorch backend)")

# %% [markdown]
# ## 6. Exercise: write AdamW
# Write one AdamW update, in place, for a 1-D parameter array. The check runs it for three steps (so the
# bias correction matters) and compares the parameters and both moments with `torch.optim.AdamW`.

# %% tags=["exercise"]
def adamw_update(params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """One AdamW step at `step` (1-based); updates params, m and v in place."""
    raise NotImplementedError("write the update, then run the check below")


# %% tags=["check"]
from gpt2lab.explain.exercises import check, show_solution  # stuck? show_solution("adamw_update")

check("adamw_update", adamw_update)

# %% [markdown]
# ## 7. GPT-2 124M on a GPU
# Everything above runs on a laptop CPU. The same kernels have CUDA versions (`@cuda.jit`), and the model
# keeps its buffers on the GPU with `device="cuda"`. On a machine with an NVIDIA GPU:
#
# ```bash
# make setup TORCH="torch==2.13.0" TORCH_PIP_ARGS="--index-url <PyTorch's CUDA wheel index>"
# gpt2lab verify --device cuda          # every kernel against PyTorch on the GPU
# gpt2lab bench --device cuda           # our kernels vs PyTorch, side by side
# gpt2lab train --backend numba --device cuda --config gpt2 --batch 8 --seq 256 --steps 2000 \
#               --verify-every 100 --json-log runs/gpt2/log.jsonl
# ```
#
# With OpenAI's 124M weights on disk (a Hugging Face `gpt2` folder), `GPT2.from_pretrained(path)` loads them,
# and `KernelGPT2.from_torch(model)` runs them on our kernels.
#
# ## Check yourself
# The cell below is the whole lesson in one line: one verified training step of our kernels against PyTorch.

# %%
assert ParityMonitor(NumbaBackend(config, OptimConfig(), seed=1).model).verify_step(x, y, lr=1e-3).ok
print("OK: forward, backward and AdamW of every kernel match PyTorch")
