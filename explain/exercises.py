"""The course's exercises: for each, the cases its check tries, the reference it compares with, its hints.

A lesson's check cell is one line, and never raises for a wrong answer (see `exercise.run_check`):

    from gpt2lab.explain.exercises import check, show_solution
    check("pair_counts", pair_counts)       # a panel: OK, or FAIL with input, expected vs got and a hint
    show_solution("pair_counts")            # on request: prints one solution

References are PyTorch (autograd, torch.optim.AdamW) where there is one, else the package's own tested code.
"""
from __future__ import annotations

import numpy as np
import torch

from gpt2lab.datasets.bpe import chunk_counts, count_pairs
from gpt2lab.datasets.tokenizer import GPT2_PATTERN
from gpt2lab.kernels.adamw import reference as adamw_torch  # torch.optim.AdamW, float64, from zero moments

from .check import Mismatch, first_mismatch
from .exercise import Case, CheckResult, run_check
from .solutions import show_solution


def _arrays(got, names: tuple[str, ...], want: dict, atol: float, rtol: float,
            hints: dict | None = None) -> Mismatch | None:
    """Compare a returned tuple of arrays, in the order `names`, with want[name]; the first mismatch or None.
    hints: name -> what to look at when that array is wrong."""
    if len(names) > 1 and not (isinstance(got, (tuple, list)) and len(got) == len(names)):
        return Mismatch(f"return the {len(names)} results as a tuple", f"({', '.join(names)})",
                        _kind(got))
    for name, g in zip(names, got if len(names) > 1 else (got,)):
        mismatch = first_mismatch(name, g, want[name], atol=atol, rtol=rtol)
        if mismatch is not None:
            mismatch.hint = (hints or {}).get(name, "")
            return mismatch
    return None


def _kind(value) -> str:
    """A value's type and length, for "expected a tuple, got ..." lines."""
    n = f" of length {len(value)}" if isinstance(value, (tuple, list)) else ""
    return f"{type(value).__name__}{n}"


def _shape(name: str, a: np.ndarray) -> str:
    return f"{name} {a.shape} {a.dtype}"


# ---------------------------------------------------------------------------------------------------------
# lesson 1: pair_counts(chunks) -> {(a, b): count}
# ---------------------------------------------------------------------------------------------------------

def _pair_case(label: str, chunks: dict, given: str, hint: str = "") -> Case:
    want = dict(count_pairs(chunks))

    def compare(got) -> Mismatch | None:
        if not isinstance(got, dict):
            return Mismatch("return a dict {(a, b): count}", "dict", _kind(got))
        got = {p: n for p, n in got.items() if n}     # a pair counted 0 times may be left in or out
        if got == want:
            return None
        pair = min(set(want) ^ set(got) or {p for p in want if want[p] != got[p]}, key=str)
        return Mismatch(f"the count of pair {pair} is wrong", str(want.get(pair, 0)), str(got.get(pair, 0)))
    return Case(label, given, lambda fn: fn(dict(chunks)), compare, hint)


def check_pair_counts(fn, text: str | None = None) -> CheckResult:
    """fn(chunks {tuple of ids: occurrences}) -> {(a, b): count}, against datasets.bpe.count_pairs."""
    if text is None:
        from gpt2lab.datasets import shakespeare
        text = shakespeare("tiny")[:50_000]
    corpus = {tuple(c): n for c, n in chunk_counts(text, GPT2_PATTERN).items()}
    cases = [
        _pair_case("the example", {(1, 2, 1, 2): 3, (2, 1): 1}, "chunks = {(1, 2, 1, 2): 3, (2, 1): 1}",
                   "a chunk seen 3 times adds each of its pairs 3 times: counts[pair] += freq"),
        _pair_case("a one-token chunk", {(5,): 4}, "chunks = {(5,): 4}", "a single token has no neighbour"),
        _pair_case("no chunks", {}, "chunks = {}", "no chunks, no pairs: return {}"),
        _pair_case(f"{len(corpus):,} Shakespeare chunks", corpus,
                   f"the {len(corpus):,} chunks of {len(text):,} characters of Shakespeare"),
    ]
    return run_check("pair_counts", fn, cases, hint="pairs are neighbours inside one chunk: zip(ids, ids[1:])")


# ---------------------------------------------------------------------------------------------------------
# lesson 2: embedding_backward(dx, ids, V, maxT) -> (dwte, dwpe)
# ---------------------------------------------------------------------------------------------------------

EMBEDDING_HINTS = {"dwte": "row ids[b, t] of dwte gets dx[b, t]; a row whose token never occurs stays zero",
                   "dwpe": "dwpe[t] = dx[:, t] summed over the batch, for t < T; rows from T on stay zero"}


def _embedding_case(label: str, ids, V: int, maxT: int, C: int, hint: str, seed: int) -> Case:
    from .embeddings import torch_encoder
    rng = np.random.default_rng(seed)
    ids = np.asarray(ids)
    wte = rng.standard_normal((V, C)).astype(np.float32)
    wpe = rng.standard_normal((maxT, C)).astype(np.float32)
    dx = rng.standard_normal(ids.shape + (C,)).astype(np.float32)
    want = torch_encoder(wte, wpe, ids, dx)
    given = f"ids = {ids.tolist()}, V={V}, maxT={maxT}, {_shape('dx', dx)}"
    return Case(label, given, lambda fn: fn(dx.copy(), ids.copy(), V, maxT),
                lambda got: _arrays(got, ("dwte", "dwpe"), want, 1e-5, 1e-4, EMBEDDING_HINTS), hint)


def check_embedding_backward(fn) -> CheckResult:
    """fn(dx (B, T, C), ids (B, T), V, maxT) -> (dwte (V, C), dwpe (maxT, C)), against torch autograd."""
    cases = [
        _embedding_case("every token once", [[0, 1, 2], [3, 4, 5]], 8, 4, 3, "", seed=1),
        _embedding_case("tokens that repeat", [[3, 7, 3, 3, 9, 0, 7], [1, 1, 2, 49, 3, 5, 5]], 50, 16, 8,
                        "a token that occurs twice gets both gradients: np.add.at(dwte, ids, dx) adds "
                        "repeats, dwte[ids] += dx keeps only one", seed=0),
    ]
    return run_check("embedding_backward", fn, cases,
                     hint="x = wte[ids] + wpe[:T]: the gradient of a lookup is a scatter-add")


# ---------------------------------------------------------------------------------------------------------
# lesson 3: causal_softmax(scaled (T, T)) -> weights (T, T)
# ---------------------------------------------------------------------------------------------------------

def _softmax_case(label: str, scaled: np.ndarray, hint: str = "") -> Case:
    scaled = scaled.astype(np.float32)
    T = scaled.shape[0]
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    want = {"weights": torch.softmax(torch.as_tensor(scaled).masked_fill(future, float("-inf")), -1).numpy()}
    return Case(label, _shape("scaled", scaled) + (f" = {scaled.tolist()}" if T == 1 else ""),
                lambda fn: fn(scaled.copy()), lambda got: _arrays(got, ("weights",), want, 1e-6, 1e-5), hint)


def check_causal_softmax(fn, seed: int = 0) -> CheckResult:
    """fn(scaled (T, T) float32) -> weights (T, T): mask the future, softmax each row; against PyTorch."""
    rng = np.random.default_rng(seed)
    cases = [
        _softmax_case("random scores, T=6", rng.standard_normal((6, 6)),
                      "row t may look at keys 0..t only: set scaled[t, s] to -inf where s > t, then softmax "
                      "each row (weights of a row sum to 1)"),
        _softmax_case("one token, T=1", rng.standard_normal((1, 1)), "a single token attends to itself: weight 1"),
        _softmax_case("huge scores (about ±200), T=13", 200.0 * rng.standard_normal((13, 13)),
                      "exp(200) overflows float32: subtract each row's max before exp (it cancels out)"),
        _softmax_case("T=40", 3 * rng.standard_normal((40, 40))),
    ]
    return run_check("causal_softmax", fn, cases, hint="mask (s > t) to -inf, subtract the row max, exp, divide "
                                                       "by the row sum")


# ---------------------------------------------------------------------------------------------------------
# lessons 4 and 5: the layer norm backward(dout, x, gamma, mean, rstd) -> (dx, dgamma, dbeta)
# ---------------------------------------------------------------------------------------------------------

LAYERNORM_SHAPES = [(2, 5, 16), (1, 1, 8), (3, 4, 37), (2, 3, 128)]


def _layernorm_case(shape, names: tuple[str, str, str], weight: str, rng, plain: bool) -> Case:
    from .layernorm import forward_steps, torch_layernorm
    # rows with their own offset and scale, so a missing mean or rstd term shows; one plain standard row
    loc = 0.0 if plain else rng.uniform(-3, 3, shape[:2] + (1,))
    scale = 1.0 if plain else rng.uniform(0.5, 4, shape[:2] + (1,))
    x = (loc + scale * rng.standard_normal(shape)).astype(np.float32)
    gamma = (1 + 0.5 * rng.standard_normal(shape[-1])).astype(np.float32)
    beta = (0.5 * rng.standard_normal(shape[-1])).astype(np.float32)
    dout = rng.standard_normal(shape).astype(np.float32)
    s = forward_steps(x, gamma, beta)
    mean, rstd = s["mean"][..., 0], s["rstd"][..., 0]
    ref = torch_layernorm(x, gamma, beta, dout)
    want = dict(zip(names, (ref["dx"], ref["dgamma"], ref["dbeta"])))
    label = f"shape {shape}" + (", a plain row" if plain else "")
    given = (f"{_shape('dout', dout)}, x the same, {_shape(weight, gamma)}, "
             f"mean and rstd {mean.shape}")
    dx, dgamma, dbeta = names
    hints = {dx: f"{dx} = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)), means over C, with "
                 f"norm = (x - mean) * rstd and dnorm = dout * {weight} (mean, rstd: add an axis, [..., None])",
             dgamma: f"{dgamma} = sum of dout * norm over B and T: shape (C,)",
             dbeta: f"{dbeta} = sum of dout over B and T: shape (C,)"}
    return Case(label, given, lambda fn: fn(dout.copy(), x.copy(), gamma.copy(), mean.copy(), rstd.copy()),
                lambda got: _arrays(got, names, want, 1e-4, 1e-3, hints))


def check_layernorm_backward(fn, names: tuple[str, str, str] = ("dx", "dgamma", "dbeta"), weight: str = "gamma",
                             exercise: str = "layernorm_backward_np", seed: int = 0) -> CheckResult:
    """fn(dout, x (B, T, C), gamma (C,), mean, rstd (B, T)) -> (dx, dgamma, dbeta), against torch autograd of
    F.layer_norm, on four shapes: a batch, one row, C = 37 (no power of 2), C = 128. names and weight: the
    lesson's words for the gradients and for gamma (lesson 5 says w, dweight, dbias)."""
    rng = np.random.default_rng(seed)
    cases = [_layernorm_case(shape, names, weight, rng, plain=(k == 1)) for k, shape in enumerate(LAYERNORM_SHAPES)]
    return run_check(exercise, fn, cases, hint=f"return ({', '.join(names)}), with the shapes of x, {weight} and "
                                               f"{weight}")


# ---------------------------------------------------------------------------------------------------------
# lesson 5: backward(root) -- backprop itself, over the scalar autograd engine (explain/autograd.Value)
# ---------------------------------------------------------------------------------------------------------

# (label, the expression as the learner reads it, leaf values, the expression as a function of the leaves).
# Each works on Values and on torch tensors alike (+, *, tanh), so torch's autograd gives the reference.
BACKWARD_CASES = (
    ("a product and a sum", "L = a*b + c", dict(a=2.0, b=-3.0, c=10.0), lambda a, b, c: a * b + c),
    ("a value used twice", "L = a*a", dict(a=3.0), lambda a: a * a),
    ("a node reached by two paths", "d = a*b; L = d*d.tanh() + d", dict(a=0.5, b=-1.5),
     lambda a, b: (lambda d: d * d.tanh() + d)(a * b)),
    ("a neuron", "L = tanh(w1*x1 + w2*x2 + b)", dict(x1=2.0, w1=-3.0, x2=0.0, w2=1.0, b=6.8813735870195432),
     lambda x1, w1, x2, w2, b: (x1 * w1 + x2 * w2 + b).tanh()),
)


def _backward_case(label: str, given: str, leaves: dict, f) -> Case:
    from .autograd import Value
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in leaves.items()}
    f(**t).backward()
    want = {k: float(v.grad) for k, v in t.items()}

    def run(fn):
        values = {k: Value(v, label=k) for k, v in leaves.items()}
        fn(f(**values))
        return {k: v.grad for k, v in values.items()}

    def compare(got) -> Mismatch | None:
        if all(g == 0 for g in got.values()):
            return Mismatch("every gradient is still 0", ", ".join(f"{k}.grad={v:.4g}" for k, v in want.items()),
                            "all 0", "start at the root: root.grad = 1.0 (dL/dL), then call _backward on the way down")
        for k, w in want.items():
            if abs(got[k] - w) > 1e-9 * max(1.0, abs(w)):
                return Mismatch(f"{k}.grad is wrong", f"{w:.6g}", f"{got[k]:.6g}")
        return None
    return Case(label, f"{given} with " + ", ".join(f"{k}={v:g}" for k, v in leaves.items()), run, compare)


def check_backward(fn) -> CheckResult:
    """fn(root: Value) fills .grad of every Value root depends on (root.grad = 1 first), on expressions whose
    gradients PyTorch's autograd computes for comparison: a sum, a value used twice, a node reached by two
    paths, a neuron."""
    return run_check("backward", fn, [_backward_case(*c) for c in BACKWARD_CASES],
                     hint="order the nodes so that every node comes after its inputs (depth first, each node "
                          "once: keep a set of visited nodes), set root.grad = 1.0, then call node._backward() "
                          "for the nodes in reverse order: a node passes its gradient on only once it is complete")


# ---------------------------------------------------------------------------------------------------------
# lesson 8: adamw_update(params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay), in place
# ---------------------------------------------------------------------------------------------------------

HYPER = dict(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)


ADAMW_HINTS = {
    "m": "m is the running mean of the gradient, updated in place: m[:] = beta1 * m + (1 - beta1) * grads "
         "(m = ... makes a new array the caller never sees)",
    "v": "v is the running mean of the squared gradient, in place: v[:] = beta2 * v + (1 - beta2) * grads**2",
    "params": "first the decoupled decay, params -= lr * weight_decay * params; then params -= lr * m_hat / "
              "(sqrt(v_hat) + eps), with the bias corrections m_hat = m / (1 - beta1**step), "
              "v_hat = v / (1 - beta2**step)",
}


def _adamw_case(label: str, steps: int, n: int, rng) -> Case:
    param = rng.standard_normal(n).astype(np.float32)
    grads = [rng.standard_normal(n).astype(np.float32) for _ in range(steps)]
    want = adamw_torch(param, grads, HYPER)

    def run(fn):
        p, m, v = param.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
        for t, g in enumerate(grads, start=1):
            fn(p, g.copy(), m, v, t, HYPER["lr"], HYPER["beta1"], HYPER["beta2"], HYPER["eps"],
               HYPER["weight_decay"])
        return m, v, p      # the moments first: a wrong m or v explains a wrong step
    given = f"params ({n},) float32, m = v = zeros, " + (f"steps 1..{steps}, " if steps > 1 else "step 1, ") + ", ".join(f"{k}={v}" for k, v in HYPER.items())
    return Case(label, given, run, lambda got: _arrays(got, ("m", "v", "params"), want, 1e-5, 1e-4, ADAMW_HINTS))


def check_adamw(fn, n: int = 37, seed: int = 0) -> CheckResult:
    """fn(params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay), updating params, m, v in place
    (float32 1-D), against torch.optim.AdamW: one step, then three (so the bias correction matters)."""
    rng = np.random.default_rng(seed)
    cases = [_adamw_case("one step", 1, n, rng), _adamw_case("three steps", 3, n, rng)]
    return run_check("adamw_update", fn, cases, hint="update params, m and v in place; return nothing")


# ---------------------------------------------------------------------------------------------------------
# lesson 6: mlp_backward(dout, x, w_fc, b_fc, w_proj) -> (dx, dw_fc, db_fc, dw_proj, db_proj)
# ---------------------------------------------------------------------------------------------------------

MLP_NAMES = ("dx", "dw_fc", "db_fc", "dw_proj", "db_proj")
MLP_HINTS = {
    "dw_proj": "out = a @ w_proj.T + b_proj, so dw_proj = dout.T @ a, with a = gelu(h) and h = x @ w_fc.T + b_fc",
    "db_proj": "db_proj = dout summed over the rows: shape (C,)",
    "dw_fc": "da = dout @ w_proj, then dh = da * gelu_grad(h) (the chain rule through GELU), dw_fc = dh.T @ x",
    "db_fc": "db_fc = dh summed over the rows: shape (4C,)",
    "dx": "dx = dh @ w_fc, with dh = (dout @ w_proj) * gelu_grad(h)",
}


def _mlp_case(label: str, N: int, C: int, rng) -> Case:
    H = 4 * C
    x = rng.standard_normal((N, C)).astype(np.float32)
    w_fc = (rng.standard_normal((H, C)) / np.sqrt(C)).astype(np.float32)
    b_fc = (0.5 * rng.standard_normal(H)).astype(np.float32)
    w_proj = (rng.standard_normal((C, H)) / np.sqrt(H)).astype(np.float32)
    b_proj = (0.1 * rng.standard_normal(C)).astype(np.float32)
    dout = rng.standard_normal((N, C)).astype(np.float32)
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
         for k, v in dict(x=x, w_fc=w_fc, b_fc=b_fc, w_proj=w_proj, b_proj=b_proj).items()}
    h = t["x"] @ t["w_fc"].T + t["b_fc"]
    out = torch.nn.functional.gelu(h, approximate="tanh") @ t["w_proj"].T + t["b_proj"]
    out.backward(torch.tensor(dout, dtype=torch.float64))
    want = dict(zip(MLP_NAMES, (t[k].grad.numpy() for k in ("x", "w_fc", "b_fc", "w_proj", "b_proj"))))
    given = f"{_shape('dout', dout)}, {_shape('x', x)}, {_shape('w_fc', w_fc)}, {_shape('w_proj', w_proj)}"
    return Case(label, given, lambda fn: fn(dout.copy(), x.copy(), w_fc.copy(), b_fc.copy(), w_proj.copy()),
                lambda got: _arrays(got, MLP_NAMES, want, 1e-4, 1e-3, MLP_HINTS))


def check_mlp_backward(fn, seed: int = 0) -> CheckResult:
    """fn(dout (N, C), x (N, C), w_fc (4C, C), b_fc (4C,), w_proj (C, 4C)) -> (dx, dw_fc, db_fc, dw_proj, db_proj)
    of out = gelu(x @ w_fc.T + b_fc) @ w_proj.T + b_proj, against torch autograd (tanh GELU, float64)."""
    rng = np.random.default_rng(seed)
    cases = [_mlp_case("3 positions, C = 4", 3, 4, rng), _mlp_case("one position", 1, 8, rng),
             _mlp_case("11 positions (the running sentence), C = 16", 11, 16, rng)]
    return run_check("mlp_backward", fn, cases, hint=f"return ({', '.join(MLP_NAMES)})")


# ---------------------------------------------------------------------------------------------------------
# lesson 7: broken_op(rows) -> the op whose kernel is broken, from a parity report's rows
# ---------------------------------------------------------------------------------------------------------

BROKEN_CASES = ("crossentropy_backward_no_onehot", "residual_backward_one_branch", "gelu_backward_off")


def check_broken_op(fn) -> CheckResult:
    """fn(rows: list of parity row dicts in pass order, each with "op", "tensor", "direction", "ratio", "ok")
    -> the broken op's name, on training steps with three different faults injected (explain/brokenkernel.py)."""
    from gpt2lab.gpt2.faults import FAULTS

    from .brokenkernel import parity_rows

    def case(fault: str) -> Case:
        want = FAULTS[fault].op

        def compare(got):
            return None if got == want else Mismatch("that op's kernel is not the broken one", repr(want), repr(got))
        return Case(f"a step with one broken kernel (#{BROKEN_CASES.index(fault) + 1})",
                    f"the {len(parity_rows(fault))} parity rows of that step", lambda fn: fn(parity_rows(fault)),
                    compare)
    return run_check("broken_op", fn, [case(f) for f in BROKEN_CASES],
                     hint="errors flow downstream: every tensor computed from a wrong one is wrong too, often by "
                          "more. The first failing row in pass order names the broken op")


# ---------------------------------------------------------------------------------------------------------
# one entry point for the notebooks
# ---------------------------------------------------------------------------------------------------------

EXERCISES = {
    "pair_counts": check_pair_counts,
    "embedding_backward": check_embedding_backward,
    "causal_softmax": check_causal_softmax,
    "layernorm_backward_np": check_layernorm_backward,
    "backward": check_backward,
    "adamw_update": check_adamw,
    "mlp_backward": check_mlp_backward,
    "broken_op": check_broken_op,
}


def check(exercise: str, fn) -> CheckResult:
    """Check the learner's function for `exercise` (a key of EXERCISES, the function's name in the lesson), or the
    learner's kernel for a puzzle (explain/puzzles.py: the kernel's name)."""
    from .puzzles import PUZZLES, check_puzzle
    if exercise in PUZZLES:
        return check_puzzle(exercise, fn)
    if exercise not in EXERCISES:
        raise ValueError(f"check: no exercise named {exercise!r}; expected one of {sorted(EXERCISES)}")
    return EXERCISES[exercise](fn)


__all__ = ["EXERCISES", "HYPER", "LAYERNORM_SHAPES", "check", "show_solution", "check_pair_counts",
           "check_embedding_backward", "check_causal_softmax", "check_layernorm_backward", "check_backward", "check_adamw",
           "check_mlp_backward", "check_broken_op"]
