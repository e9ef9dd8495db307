"""explain.gradflow (gradient norms per layer, over checkpoints) and explain.backprop (one block by hand)."""
import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from gpt2lab.explain import backprop as BP  # noqa: E402
from gpt2lab.explain.gradflow import (GROUPS, draw_gradflow, grad_norms, gradflow_animation,  # noqa: E402
                                      gradflow_over_training, stream_grads)
from gpt2lab.gpt2.config import GPTConfig  # noqa: E402
from gpt2lab.gpt2.model import GPT2  # noqa: E402

CFG = GPTConfig.preset("tiny", vocab_size=97, block_size=16, n_layer=3)


def small_model(seed):
    torch.manual_seed(seed)
    return GPT2(CFG)


def batch():
    rng = np.random.default_rng(0)
    return rng.integers(0, 97, (2, 16)), rng.integers(0, 97, (2, 16))


def test_grad_norms_match_autograd_norms_and_leave_no_grads():
    model = small_model(0)
    x, y = batch()
    g = grad_norms(model, x, y)
    assert g["layers"].shape == (3, len(GROUPS)) and g["stream"].shape == (4,)
    assert all(p.grad is None for p in model.parameters())
    _, loss = model(torch.as_tensor(x), torch.as_tensor(y))
    loss.backward()
    assert g["loss"] == pytest.approx(loss.item(), rel=1e-6)
    h = model.transformer.h[1]
    fc = torch.sqrt(h.mlp.c_fc.weight.grad.pow(2).sum() + h.mlp.c_fc.bias.grad.pow(2).sum()).item()
    assert g["layers"][1, GROUPS.index("mlp.c_fc")] == pytest.approx(fc, rel=1e-5)
    assert g["wpe"] == pytest.approx(model.transformer.wpe.weight.grad.norm().item(), rel=1e-5)
    # the last stream gradient is dL/d(output of the last block); it is nonzero everywhere a token was scored
    assert np.all(g["stream"] > 0)


def test_gradflow_over_checkpoints_and_animation():
    models = {f"ckpt{i}": small_model(i) for i in range(3)}
    x, y = batch()
    flow = gradflow_over_training([(0, "ckpt0"), (5, "ckpt1"), (9, "ckpt2")], x, y, load=models.__getitem__)
    assert flow.layers.shape == (3, 3, len(GROUPS)) and list(flow.steps) == [0, 5, 9]
    fig, update = draw_gradflow(flow, 0)
    update(2)
    assert "step=9" in fig.axes[0].get_title()
    heights = [r.get_height() for r in fig.axes[0].patches[:3]]
    np.testing.assert_allclose(heights, flow.layers[2, :, 0])
    assert "<script" in gradflow_animation(flow).to_jshtml()
    with pytest.raises(ValueError, match="no checkpoints"):
        gradflow_over_training([], x, y)


def block_case(seed=0, B=2, T=7, C=32):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, C)).astype(np.float32)
    dout = rng.standard_normal((B, T, C)).astype(np.float32)
    return x, BP.random_block_params(C, seed), dout


NUMPY_OPS = {op: (getattr(BP, f"np_{op}_forward"), getattr(BP, f"np_{op}_backward"), "numpy")
             for op in ("layernorm", "matmul", "attention", "gelu", "residual")}


@pytest.mark.parametrize("which", ["numpy", "kernels"])
def test_block_backward_matches_torch_autograd_for_every_gradient(which):
    x, params, dout = block_case()
    ops = NUMPY_OPS if which == "numpy" else BP.block_ops()
    ok = BP.check_block(x, params, 4, dout, ops, quiet=True)
    assert len(ok) == 1 + len(BP.gradient_names()) == 1 + 10 + 12 + 1
    assert all(ok.values()), [k for k, v in ok.items() if not v]


def test_block_reference_is_the_model_block():
    model = small_model(0)
    x, _, dout = block_case(C=CFG.n_embd, T=5)
    params = BP.block_params(model, layer=1)
    ref = BP.block_reference(x, params, CFG.n_head, dout)
    with torch.no_grad():
        out = model.transformer.h[1](torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(ref["out"], out, atol=1e-5)


def test_block_check_catches_a_wrong_backward():
    x, params, dout = block_case()

    def wrong_gelu_backward(dinp, inp, dout_):  # forgets the derivative: passes dout straight through
        dinp += dout_
    ops = dict(NUMPY_OPS, gelu=(BP.np_gelu_forward, wrong_gelu_backward, "numpy"))
    ok = BP.check_block(x, params, 4, dout, ops, quiet=True)
    assert ok["dfchg"] and not ok["dfch"] and not ok["dx"]


def test_stream_grads_close_the_loop_through_a_hand_written_block():
    """Block 1 by hand on the real residual stream: its input gradient is what autograd of the whole model says."""
    model = small_model(0)
    x, y = batch()
    loss, xs, dxs = stream_grads(model, x, y)
    assert len(xs) == len(dxs) == CFG.n_layer + 1 and xs[0].shape == (2, 16, CFG.n_embd)
    params = BP.block_params(model, layer=1)
    cache = BP.block_forward(xs[1], params, CFG.n_head, NUMPY_OPS)
    np.testing.assert_allclose(cache["out"], xs[2], atol=1e-5)
    grads = BP.block_backward(dxs[2], cache, params, CFG.n_head, NUMPY_OPS)
    np.testing.assert_allclose(grads["dx"], dxs[1], atol=1e-6, rtol=1e-4)
    assert all(p.grad is None for p in model.parameters())


def test_token_grad_norms_and_figure():
    x, params, dout = block_case()
    grads = BP.block_backward(dout, BP.block_forward(x, params, 4, NUMPY_OPS), params, 4, NUMPY_OPS)
    norms = BP.token_grad_norms(grads)
    assert norms.shape == (len(BP.FLOW_NAMES), 7)
    np.testing.assert_allclose(norms[0], np.linalg.norm(dout[0], axis=-1), rtol=1e-6)
    fig = BP.token_grad_figure(grads, list(range(7)), [f"t{i}" for i in range(7)])
    assert "(9, 7)" in fig.axes[0].get_title()
