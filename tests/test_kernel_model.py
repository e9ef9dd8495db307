"""The kernel-backed GPT-2 (gpt2/kernel_model.py) against the PyTorch reference GPT2, like llm.c's test_gpt2.c.

Same weights, same batch: the loss, the logits and EVERY parameter gradient must match torch autograd (run in
float64, so the error printed is ours alone), then AdamW must match torch.optim.AdamW with the same param
groups, and a few lock-step training steps must stay together. Each tensor prints one line:

    OK     transformer.h.0.attn.c_attn.weight   (144, 48)   max_abs 3.1e-08  max_rel 2.2e-05  atol 1e-06 rtol 1e-04
"""
import copy

import numpy as np
import pytest
import torch

from gpt2lab.gpt2.buffers import (ACT_NAMES, DECAYED, PARAM_NAMES, FlatBuffer, act_shapes, fill, param_shapes,
                                  reference_names, scale)
from gpt2lab.gpt2.config import GPTConfig
from gpt2lab.gpt2.kernel_model import KernelGPT2
from gpt2lab.gpt2.model import GPT2, init_params
from gpt2lab.kernels.check import compare

# An awkward shape on purpose: 3 heads of 16, a vocabulary of 101 and a context of 37 (nothing a power of 2).
ODD = GPTConfig(block_size=37, vocab_size=101, n_layer=2, n_head=3, n_embd=48)
TINY = GPTConfig.preset("tiny")
CASES = {"odd": (ODD, 3, 37), "tiny": (TINY, 2, 16)}  # config, B, T

# Stated tolerances (atol, rtol), float32 kernels vs a float64 reference; checked with numpy's allclose rule.
TOL_LOSS = 1e-6                      # relative
TOL_LOGITS = (1e-5, 1e-4)
TOL_GRAD = (2e-6, 1e-3)              # gradients are ~1e-3..1e-1 for these models; atol covers the near-zero ones
TOL_ADAMW = (1e-7, 1e-6)             # one update from the same grads: only float32 rounding differs
TOL_LOCKSTEP_LOSS = 1e-4             # relative, per step, each side on its own gradients
LOCKSTEP_MAX_FRAC = 0.05          # of lr * steps, the most any element can move
LOCKSTEP_NORM_FRAC = 1e-2         # of the norm of the distance travelled


def check_tensors(pairs, tol, title):
    """pairs: name -> (ours, ref). Prints one llm.c line per tensor; returns (all ok, report, max abs per name)."""
    lines, ok_all, worst = [title], True, {}
    for name, (ours, ref) in pairs.items():
        ours, ref = np.asarray(ours), np.asarray(ref)
        atol, rtol = tol(name) if callable(tol) else tol
        max_abs, max_rel, ok = compare(ours, ref, atol, rtol)
        ok_all &= ok
        worst[name] = max_abs
        lines.append(f"{'OK    ' if ok else 'NOT OK'} {name:<40} {str(ref.shape):<14} max_abs {max_abs:.1e}  "
                     f"max_rel {max_rel:.1e}  atol {atol:.0e} rtol {rtol:.0e}")
    report = "\n".join(lines)
    print(report)
    return ok_all, report, worst


def reference_model(config, seed=0):
    model = GPT2(config)
    model.load_params_numpy(init_params(config, seed))
    return model


def batch(config, B, T, seed=0):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, config.vocab_size, size=(B, T))
    targets = rng.integers(0, config.vocab_size, size=(B, T))
    return idx, targets


def torch_float64_step(model, idx, targets):
    """Logits, loss and parameter gradients of a float64 copy of the reference model."""
    ref = copy.deepcopy(model).double()
    logits, loss = ref(torch.as_tensor(idx, dtype=torch.long), torch.as_tensor(targets, dtype=torch.long))
    loss.backward()
    grads = {n: p.grad.numpy() for n, p in ref.named_parameters()}
    return logits.detach().numpy(), loss.item(), grads


# ---------------------------------------------------------------- layout
@pytest.mark.parametrize("config", [ODD, TINY], ids=["odd", "tiny"])
def test_flat_buffer_layout(config):
    shapes = param_shapes(config)
    assert tuple(shapes) == PARAM_NAMES
    buf = FlatBuffer(shapes)
    assert buf.size == config.num_params()
    # the views tile the buffer back to back in llm.c's order, no gaps
    offset = 0
    for name, view in buf.views().items():
        assert buf.offsets[name] == offset and view.flags["C_CONTIGUOUS"] and view.base is buf.memory
        offset += view.size
    assert offset == buf.size
    # a per-layer view writes into the flat buffer
    buf.views()["qkvw"][1][2, 3] = 7.0
    C = config.n_embd
    assert buf.memory[buf.offsets["qkvw"] + 3 * C * C + 2 * C + 3] == 7.0
    assert set(act_shapes(config, 2, 3)) == set(ACT_NAMES)


@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
def test_fill_and_scale_reach_every_element_on_the_cpu(strided):
    """buffers.fill and scale run numba's threads over a contiguous array; a 2-D view of some columns, which
    reshape(-1) would copy (the writes then lost in the copy), takes numpy's own path. Nothing around the
    array changes."""
    memory = np.arange(1, 31 * 40 + 1, dtype=np.float32).reshape(31, 40)
    a = memory[:, 5:9] if strided else memory[3:20]
    inside = np.zeros(memory.shape, bool)
    inside[(slice(None), slice(5, 9)) if strided else slice(3, 20)] = True
    before = memory.copy()
    scale(a, 3.0)
    assert np.array_equal(memory[inside], 3 * before[inside])
    fill(a, 0.25)
    assert (memory[inside] == 0.25).all()
    assert np.array_equal(memory[~inside], before[~inside])


def test_activation_buffers_shrink_without_realloc_and_grow_with():
    model = KernelGPT2(ODD)
    idx, targets = batch(ODD, 3, 10)
    model.forward(idx, targets)
    memory = model.acts_memory.memory
    model.forward(idx[:2, :5], targets[:2, :5])
    assert model.acts_memory.memory is memory and model.logits.shape == (2, 5, ODD.vocab_size)
    model.forward(*batch(ODD, 1, 20))
    assert model.acts_memory.memory is not memory and model.capacity == (3, 20)


# ---------------------------------------------------------------- conversions
@pytest.mark.parametrize("config", [ODD, TINY], ids=["odd", "tiny"])
def test_state_dict_round_trip_is_exact(config):
    ref = reference_model(config, seed=3)
    sd = ref.state_dict()
    out = KernelGPT2.from_torch(ref).to_state_dict()
    assert set(out) == set(sd)
    for name, t in sd.items():
        assert torch.equal(out[name], t), name
    assert out["lm_head.weight"] is out["transformer.wte.weight"]
    # and back: the reference loads our state dict strictly, and from a plain state dict + config works too
    GPT2(config).load_state_dict(out)
    again = KernelGPT2.from_torch(out, config=config).params_numpy()
    for name, a in ref.params_numpy().items():
        assert np.array_equal(again[name], a), name


def test_named_views():
    ref = reference_model(ODD, seed=1)
    model = KernelGPT2.from_torch(ref)
    sd = ref.state_dict()
    for name, (ours, layer) in reference_names(ODD).items():
        assert np.array_equal(model.params_view(name), sd[name].numpy()), name
        expected = model.params_view(ours) if layer is None else model.params_view(ours)[layer]
        assert np.shares_memory(model.params_view(name), expected)
    assert model.params_view("lm_head.weight") is model.params_view("wte")
    assert model.grads_view("transformer.h.1.mlp.c_fc.weight").shape == (4 * ODD.n_embd, ODD.n_embd)
    with pytest.raises(KeyError, match="no parameter"):
        model.params_view("transformer.h.9.ln_1.weight")
    model.forward(*batch(ODD, 2, 5))
    layer = model.layer_activations(1)
    assert layer["att"].shape == (2, ODD.n_head, 5, 5) and layer["qkv"].shape == (2, 5, 3 * ODD.n_embd)
    assert np.shares_memory(layer["residual3"], model.activations["residual3"])
    # writing a parameter through its view changes the model
    model.params_view("transformer.ln_f.bias")[:] += 1.0
    with torch.no_grad():
        ref.transformer.ln_f.bias += 1.0
    logits_ref, _ = ref(torch.as_tensor(batch(ODD, 2, 5)[0]))
    model.forward(batch(ODD, 2, 5)[0])
    assert np.allclose(model.logits, logits_ref.detach().numpy(), atol=1e-4)


def test_bad_inputs_are_refused():
    model = KernelGPT2(ODD)
    with pytest.raises(ValueError, match="block_size"):
        model.forward(np.zeros((1, ODD.block_size + 1), dtype=np.int64))
    with pytest.raises(ValueError, match="token ids"):
        model.forward(np.full((1, 4), ODD.vocab_size))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model.forward(np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match="targets"):
        model.forward(np.zeros((1, 4)), np.zeros((1, 3)))
    with pytest.raises(RuntimeError, match="forward"):
        KernelGPT2(ODD).backward()
    model.forward(np.zeros((1, 4), dtype=np.int64))  # no targets: no loss, so no backward
    with pytest.raises(RuntimeError, match="forward"):
        model.backward()
    with pytest.raises(ValueError, match="device"):
        KernelGPT2(ODD, device="tpu")


# ---------------------------------------------------------------- forward and backward parity
@pytest.mark.parametrize("case", list(CASES))
def test_forward_backward_match_torch(case):
    config, B, T = CASES[case]
    ref = reference_model(config, seed=1)
    model = KernelGPT2.from_torch(ref)
    idx, targets = batch(config, B, T, seed=2)
    logits_ref, loss_ref, grads_ref = torch_float64_step(ref, idx, targets)

    loss = model.forward(idx, targets)
    model.zero_grad()
    model.backward()

    print(f"\n[{case}] loss ours {loss:.8f} torch(float64) {loss_ref:.8f}")
    assert abs(loss - loss_ref) <= TOL_LOSS * abs(loss_ref)
    ok_logits, report_logits, _ = check_tensors({"logits": (model.logits, logits_ref)}, TOL_LOGITS, "logits")
    ours = {name: model.grads_view(name) for name in grads_ref}
    ok, report, _ = check_tensors({n: (ours[n], g) for n, g in grads_ref.items()}, TOL_GRAD,
                                  f"gradients [{case}] ({len(grads_ref)} tensors)")
    assert ok_logits, report_logits
    assert ok, report


def test_backward_accumulates_until_zero_grad():
    model = KernelGPT2(ODD)
    idx, targets = batch(ODD, 2, 6)
    model.forward(idx, targets)
    model.zero_grad()
    model.backward()
    once = model.grads_memory.memory.copy()
    model.backward()  # llm.c semantics: a second backward adds the same gradient again
    assert np.allclose(model.grads_memory.memory, 2 * once, rtol=1e-5, atol=1e-8)
    model.zero_grad()
    assert not model.grads_memory.memory.any()


# ---------------------------------------------------------------- AdamW
def torch_adamw(ref, lr, weight_decay=0.1):
    """torch.optim.AdamW with the reference trainer's param groups: decay on the 2-D weights only."""
    params = dict(ref.named_parameters())
    decay = [p for p in params.values() if p.dim() >= 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95), eps=1e-8)


def test_decay_groups_are_the_matrices():
    for name, (ours, _) in reference_names(ODD).items():
        assert (ours in DECAYED) == (len(dict(reference_model(ODD).named_parameters())[name].shape) >= 2), name


@pytest.mark.parametrize("case", list(CASES))
def test_adamw_matches_torch_optim(case):
    """Three AdamW steps from the same gradients (ours, handed to torch): every parameter after each step."""
    config, B, T = CASES[case]
    ref = reference_model(config, seed=1)
    model = KernelGPT2.from_torch(ref)
    opt = torch_adamw(ref, lr=1e-3)
    named = dict(ref.named_parameters())
    for step in range(1, 4):
        model.forward(*batch(config, B, T, seed=step))
        model.zero_grad()
        model.backward()
        for name, p in named.items():
            p.grad = torch.from_numpy(np.array(model.grads_view(name)))
        opt.step()
        model.adamw_step(lr=1e-3)
        assert model.step == step
        ok, report, _ = check_tensors({n: (model.params_view(n), p.detach().numpy()) for n, p in named.items()},
                                      TOL_ADAMW, f"params after AdamW step {step} [{case}]")
        assert ok, report


@pytest.mark.parametrize("case", list(CASES))
def test_lockstep_training_matches_torch(case):
    """Each side on its own gradients for a few steps: the losses and the parameters stay together.

    Adam divides by sqrt(v), so an element whose gradient is ~0 moves by up to ~lr on either side on the sign
    of float32 noise: no per-element tolerance below lr can hold. The check is therefore relative to how far
    the weights travelled: per tensor, max |ours - torch| <= LOCKSTEP_MAX_FRAC * lr * steps, and the
    difference's norm <= LOCKSTEP_NORM_FRAC * the norm of the distance moved.
    """
    config, B, T = CASES[case]
    steps, lr = 4, 1e-3
    ref = reference_model(config, seed=4)
    model = KernelGPT2.from_torch(ref)
    start = ref.params_numpy()
    opt = torch_adamw(ref, lr=lr)
    named = dict(ref.named_parameters())
    for step in range(steps):
        idx, targets = batch(config, B, T, seed=10 + step)
        opt.zero_grad()
        _, loss_ref = ref(torch.as_tensor(idx), torch.as_tensor(targets))
        loss_ref.backward()
        opt.step()
        loss = model.forward(idx, targets)
        model.zero_grad()
        model.backward()
        model.adamw_step(lr=lr)
        print(f"[{case}] step {step}: loss ours {loss:.6f} torch {loss_ref.item():.6f}")
        assert abs(loss - loss_ref.item()) <= TOL_LOCKSTEP_LOSS * abs(loss_ref.item())
    ok, report, _ = check_tensors({n: (model.params_view(n), p.detach().numpy()) for n, p in named.items()},
                                  (LOCKSTEP_MAX_FRAC * lr * steps, 0.0), f"params after {steps} lock-step steps [{case}]")
    assert ok, report
    lines, bad = [], []
    for n, p in named.items():
        theirs = p.detach().numpy()
        moved = np.linalg.norm(theirs - start[n])
        frac = np.linalg.norm(np.asarray(model.params_view(n)) - theirs) / max(moved, 1e-30)
        lines.append(f"{n:<40} |ours - torch| / |moved| = {frac:.1e}")
        bad += [n] if frac > LOCKSTEP_NORM_FRAC else []
    print("\n".join(lines))
    assert not bad, "\n".join(lines)


# ---------------------------------------------------------------- sampling
@pytest.mark.parametrize("temperature,top_k,seed", [(0.0, None, 0), (1.0, 1, 5), (1.0, 5, 7), (0.8, None, 11)])
def test_generate_matches_reference(temperature, top_k, seed):
    ref = reference_model(ODD, seed=2)
    model = KernelGPT2.from_torch(ref)
    idx = np.array([[1, 2, 3], [40, 50, 60]])
    # 40 new tokens from a context of 3 runs past block_size 37: the context crop is exercised too
    expected = ref.generate(torch.as_tensor(idx), 40, temperature, top_k,
                            generator=torch.Generator().manual_seed(seed)).numpy()
    got = model.generate(idx, 40, temperature=temperature, top_k=top_k, seed=seed)
    assert got.dtype == np.int64 and got.shape == (2, 43)
    assert np.array_equal(got, expected), f"\nours  {got}\ntorch {expected}"


# ---------------------------------------------------------------- CUDA helpers compile to real PTX
def test_buffer_cuda_kernels_compile_to_ptx():
    from gpt2lab.gpt2.buffers import CUDA_KERNELS
    from gpt2lab.kernels._cuda import compile_ptx
    for kernel, sig in CUDA_KERNELS:
        ptx = compile_ptx(kernel, sig)
        assert ".entry" in ptx and ".target sm_90" in ptx, kernel.__name__


# ---------------------------------------------------------------- the trainer's numba backend
BACKEND_CFG = GPTConfig(block_size=16, vocab_size=61, n_layer=2, n_head=2, n_embd=32)


def counter_corpus():
    """A learnable synthetic corpus: a noisy counter mod 61 (as in test_train.py)."""
    from gpt2lab.datasets import TokenData
    rng = np.random.default_rng(0)
    ids = ((np.arange(6000) + (rng.random(6000) < 0.1) * rng.integers(0, 61, 6000)) % 61).astype(np.uint16)
    return TokenData(train=ids[:5000], val=ids[5000:])


def test_flush_denormals_reaches_every_numba_thread():
    from gpt2lab.gpt2.kernel_backend import _denormal_results, flush_denormals
    import numba
    assert flush_denormals()
    tiny = np.array([np.finfo(np.float32).tiny], dtype=np.float32)
    assert not _denormal_results(tiny, 64 * numba.get_num_threads()).any()


def test_numba_backend_trains_like_the_torch_backend(tmp_path):
    """The generic trainer with each backend, same seed, batches and clipping: the same losses, grad norms,
    evals and text samples; and a numba checkpoint loads into the torch backend."""
    from gpt2lab.gpt2.checkpoint import load_checkpoint
    from gpt2lab.gpt2.kernel_backend import NumbaBackend
    from gpt2lab.gpt2.train import OptimConfig, RunConfig, TorchBackend, train
    data = counter_corpus()
    run = RunConfig(steps=8, batch=4, seq=12, lr=3e-3, eval_every=4, eval_batches=2, ckpt_every=0,
                    sample_tokens=5, seed=7)
    optim = OptimConfig(grad_clip=1.0)
    results = {}
    for name, cls in (("numba", NumbaBackend), ("torch", TorchBackend)):
        backend = cls(BACKEND_CFG, optim, seed=0)
        assert backend.name == name
        results[name] = train(backend, data, run, tmp_path / name, progress=False, log=lambda s: None)
    ours, theirs = results["numba"].history, results["torch"].history
    for a, b in zip(ours, theirs, strict=True):
        print(f"step {a['step']}: loss {a['loss']:.6f} / {b['loss']:.6f}, grad norm {a['grad_norm']:.5f} / "
              f"{b['grad_norm']:.5f}" + (f", sample {a['sample']!r} / {b['sample']!r}" if "sample" in a else ""))
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3)
        assert ("val_loss" in a) == ("val_loss" in b)
        if "val_loss" in a:
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
            assert a["sample"] == b["sample"]
    assert ours[-1]["loss"] < ours[0]["loss"]
    # the numba run's checkpoint, in the shared format, resumes in the torch backend and back
    ckpt = load_checkpoint(tmp_path / "numba" / "latest.pt")
    assert ckpt["backend"] == "numba" and ckpt["optim"]["step"] == 8
    torch_backend = TorchBackend(BACKEND_CFG, optim, seed=1)
    torch_backend.load_state_dict(ckpt)
    numba_backend = NumbaBackend(BACKEND_CFG, optim, seed=1)
    numba_backend.load_state_dict(torch_backend.state_dict())
    state = numba_backend.state_dict()
    assert set(state["params"]) == set(ckpt["params"]) and state["optim"]["step"] == 8
    for group in ("m", "v"):
        for n, value in ckpt["optim"][group].items():
            assert np.array_equal(state["optim"][group][n], value), (group, n)
    for n, value in ckpt["params"].items():
        assert np.array_equal(state["params"][n], value), n
