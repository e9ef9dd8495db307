"""explain.autograd: every op's value and gradient against torch autograd, and the graph drawing."""
import math

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from gpt2lab.explain.autograd import Value, neuron, topological_order, zero_grad  # noqa: E402
from gpt2lab.explain.graph import backward_animation, backward_steps, draw_graph, layout  # noqa: E402


def both(fn, *xs):
    """fn on Values and on float64 torch leaves; returns (ours, torch) outputs and input lists."""
    vs = [Value(x) for x in xs]
    ts = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in xs]
    out_v, out_t = fn(*vs), fn(*ts)
    out_v.backward()
    out_t.backward()
    return out_v, out_t, vs, ts


EXPRESSIONS = {
    "add": lambda a, b: a + b,
    "mul": lambda a, b: a * b,
    "pow": lambda a, b: a ** 3 + b ** -2,
    "tanh": lambda a, b: (a * b).tanh(),
    "exp": lambda a, b: (a - b).exp(),
    "relu": lambda a, b: (a * b).relu() + (a + b).relu(),
    "log": lambda a, b: (a * a + b * b).log(),
    "div_sub": lambda a, b: (a - b) / (a + 4.0) - 2.0 / b,
    "reuse": lambda a, b: a * a * a + a * b + b,   # a used several times: grads must add up
    "softmax_ce": lambda a, b: -(a.exp() / (a.exp() + b.exp() + 1.0)).log(),
}


@pytest.mark.parametrize("name", EXPRESSIONS)
def test_value_and_grads_match_torch(name):
    out_v, out_t, vs, ts = both(EXPRESSIONS[name], 1.3, -0.7)
    assert out_v.data == pytest.approx(out_t.item(), rel=1e-12)
    for v, t in zip(vs, ts):
        assert v.grad == pytest.approx(t.grad.item(), rel=1e-10, abs=1e-12), name


def test_relu_at_zero_has_zero_slope_like_torch():
    out_v, out_t, vs, ts = both(lambda a: a.relu(), 0.0)
    assert vs[0].grad == ts[0].grad.item() == 0.0


def test_neuron_from_micrograd():
    x1, x2, w1, w2 = Value(2.0), Value(0.0), Value(-3.0), Value(1.0)
    o = neuron([x1, x2], [w1, w2], Value(6.8813735870195432))
    o.backward()
    assert o.data == pytest.approx(math.sqrt(0.5), abs=1e-6)
    assert (x1.grad, w1.grad, x2.grad, w2.grad) == pytest.approx((-1.5, 1.0, 0.5, 0.0), abs=1e-6)


def test_topological_order_puts_inputs_first_and_handles_deep_graphs():
    x = Value(0.5)
    y = x
    for _ in range(5000):  # recursion would overflow here
        y = y * 1.0 + 0.0
    order = topological_order(y)
    assert order[0] is x or x in order
    pos = {id(v): i for i, v in enumerate(order)}
    assert all(pos[id(p)] < pos[id(v)] for v in order for p in v._prev)
    y.backward()
    assert x.grad == pytest.approx(1.0)


def test_zero_grad_then_backward_twice_gives_same_grads():
    a = Value(0.3)
    out = (a * a).tanh()
    out.backward()
    g = a.grad
    zero_grad(out)
    out.backward()
    assert a.grad == g


def test_errors_say_what_was_wrong():
    with pytest.raises(ValueError, match="positive"):
        Value(-1.0).log()
    with pytest.raises(TypeError, match="exponent"):
        Value(2.0) ** Value(3.0)


def test_backward_steps_reach_every_node_once_in_order():
    a, b = Value(2.0, "a"), Value(-3.0, "b")
    out = (a * b + a).tanh()
    snaps = backward_steps(out)
    assert snaps[0] == {id(out): 1.0}
    assert len(snaps) == 1 + sum(1 for v in topological_order(out) if v._prev)
    final = snaps[-1]
    assert final[id(a)] == pytest.approx(a.grad) and final[id(b)] == pytest.approx(b.grad)
    assert all(len(s1) >= len(s0) for s0, s1 in zip(snaps, snaps[1:]))  # reached nodes only grow


def test_draw_graph_layout_and_animation():
    a, b = Value(2.0, "a"), Value(-3.0, "b")
    out = (a * b + a).tanh()
    out.backward()
    pos = layout(out)
    assert pos[id(a)][0] < pos[id(out)][0]
    fig = draw_graph(out)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any(f"grad {a.grad:.4f}" in t for t in texts) and "tanh" in texts
    anim = backward_animation(out)
    assert "<script" in anim.to_jshtml()
