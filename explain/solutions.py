"""One solution for each exercise of the course, revealed on request: `show_solution("pair_counts")`.

They live here, not in the learner's notebook, so that running a lesson top to bottom never replaces the learner's
own function with the answer (a wrong answer then fails its check, as it should). Each function has the name and
arguments of its exercise cell; the tests check every one with `exercises.check`.
"""
from __future__ import annotations

import inspect

import numpy as np


def pair_counts(chunks):
    """Lesson 1: {(a, b): count} over adjacent pairs, each weighted by how often its chunk occurs."""
    counts = {}
    for ids, freq in chunks.items():
        for pair in zip(ids, ids[1:]):      # neighbours: (ids[0], ids[1]), (ids[1], ids[2]), ...
            counts[pair] = counts.get(pair, 0) + freq
    return counts


def embedding_backward(dx, ids, V, maxT):
    """Lesson 2: x = wte[ids] + wpe[:T] backward. Returns (dwte (V, C), dwpe (maxT, C))."""
    B, T, C = dx.shape
    dwte = np.zeros((V, C), np.float32)
    dwpe = np.zeros((maxT, C), np.float32)
    np.add.at(dwte, ids, dx)          # dwte[ids[b, t]] += dx[b, t], repeats included (dwte[ids] += dx is not!)
    dwpe[:T] = dx.sum(0)
    return dwte, dwpe


def causal_softmax(scaled):
    """Lesson 3: mask the future, then softmax each row. scaled: (T, T) -> weights (T, T)."""
    T = scaled.shape[0]
    masked = np.where(np.triu(np.ones((T, T), dtype=bool), k=1), -np.inf, scaled)
    e = np.exp(masked - masked.max(axis=1, keepdims=True))   # the row max is finite: key 0 is always visible
    return e / e.sum(axis=1, keepdims=True)


def layernorm_backward_np(dout, x, gamma, mean, rstd):
    """Lesson 4: the layer norm backward from the cache (mean, rstd: (B, T)). Returns (dx, dgamma, dbeta)."""
    mean, rstd = mean[..., None], rstd[..., None]             # (B, T, 1): broadcast along the row
    norm = (x - mean) * rstd
    dnorm = dout * gamma
    dx = rstd * (dnorm - dnorm.mean(-1, keepdims=True) - norm * (dnorm * norm).mean(-1, keepdims=True))
    return dx, (dout * norm).sum((0, 1)), dout.sum((0, 1))


def backward(root):
    """Lesson 5: backprop over the scalar engine. Every node after its inputs, then gradients from the root down."""
    order, visited = [], set()

    def visit(node):                  # depth first: a node joins the order after everything it depends on
        if node not in visited:
            visited.add(node)
            for child in node._prev:
                visit(child)
            order.append(node)
    visit(root)
    root.grad = 1.0                   # dL/dL
    for node in reversed(order):      # a node's grad is complete before it passes it on
        node._backward()


def adamw_update(params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """Lesson 8: one AdamW step at `step` (1-based); updates params, m and v in place."""
    params -= lr * weight_decay * params          # decoupled decay: on the weights, not the gradient
    m[:] = beta1 * m + (1 - beta1) * grads
    v[:] = beta2 * v + (1 - beta2) * grads * grads
    m_hat = m / (1 - beta1 ** step)               # bias correction: m and v started at zero
    v_hat = v / (1 - beta2 ** step)
    params -= lr * m_hat / (np.sqrt(v_hat) + eps)


def mlp_backward(dout, x, w_fc, b_fc, w_proj):
    """Lesson 6: the MLP's backward by hand. Returns (dx, dw_fc, db_fc, dw_proj, db_proj)."""
    from gpt2lab.explain.mlp import gelu, gelu_grad
    h = x @ w_fc.T + b_fc             # recompute the forward's cache: h, then a = gelu(h)
    a = gelu(h)
    dw_proj, db_proj = dout.T @ a, dout.sum(0)
    dh = (dout @ w_proj) * gelu_grad(h)   # back through c_proj, then through GELU elementwise
    return dh @ w_fc, dh.T @ x, dh.sum(0), dw_proj, db_proj


def broken_op(rows):
    """Lesson 7: the op of the first failing parity row, in pass order (errors flow downstream)."""
    for row in rows:
        if not row["ok"]:
            return row["op"]
    return None


SOLUTIONS = {f.__name__: f for f in (pair_counts, embedding_backward, causal_softmax, layernorm_backward_np,
                                     backward, mlp_backward, broken_op, adamw_update)}


def solution_source(exercise: str) -> str:
    """The source of the solution to `exercise` (its function's name in the lesson), or to a kernel puzzle
    (explain/puzzle_solutions.py, the kernel's name)."""
    from .puzzle_solutions import PUZZLE_SOLUTIONS
    if exercise in PUZZLE_SOLUTIONS:
        return inspect.getsource(getattr(PUZZLE_SOLUTIONS[exercise], "py_func", PUZZLE_SOLUTIONS[exercise]))
    if exercise not in SOLUTIONS:
        known = sorted(SOLUTIONS) + sorted(PUZZLE_SOLUTIONS)
        raise ValueError(f"show_solution: no exercise named {exercise!r}; expected one of {known}")
    return inspect.getsource(SOLUTIONS[exercise])


def show_solution(exercise: str) -> None:
    """Print one solution to `exercise`: try the exercise first, the check's hint usually suffices."""
    print(solution_source(exercise))


__all__ = ["SOLUTIONS", "solution_source", "show_solution"] + list(SOLUTIONS)
