"""A scalar autograd engine in the spirit of micrograd: every op writes its local backward next to its forward.

A `Value` holds one number (`data`), the derivative of the final output with respect to it (`grad`), the
values it was made from (`_prev`) and a closure `_backward` that, given `out.grad`, adds each input's share:
the chain rule, one node at a time,

    d L / d x  +=  (d out / d x) * (d L / d out)

It *adds* (+=) because a value used twice (x * x, or a token that appears twice) gets a gradient from each use.
`backward()` orders the graph topologically (every node after all the nodes it was made from) and walks it
in reverse, so a node's grad is complete before it is passed on.

    >>> a, b = Value(2.0, "a"), Value(-3.0, "b")
    >>> L = (a * b + a).tanh(); L.backward()
    >>> round(a.grad, 6), round(b.grad, 6)     # dL/da = (1 - L^2)(b + 1), dL/db = (1 - L^2) a
    (-0.002682, 0.002682)
"""
from __future__ import annotations

import math


class Value:
    """One scalar in an expression graph: data, grad, and how to send grad back to its inputs."""

    def __init__(self, data, label: str = "", _prev=(), _op: str = ""):
        self.data = float(data)
        self.grad = 0.0
        self.label = label
        self._prev = tuple(_prev)
        self._op = _op
        self._backward = lambda: None  # a leaf has nobody to pass its gradient to

    def __repr__(self):
        name = f"{self.label}=" if self.label else ""
        return f"Value({name}{self.data:.4g}, grad={self.grad:.4g})"

    # ---- binary ops: out = f(self, other); each local derivative is the partial of f ----
    def __add__(self, other):
        other = _lift(other)
        out = Value(self.data + other.data, _prev=(self, other), _op="+")

        def _backward():  # d(a + b)/da = 1, d(a + b)/db = 1: addition routes the gradient unchanged
            self.grad += out.grad
            other.grad += out.grad
        out._backward = _backward
        return out

    def __mul__(self, other):
        other = _lift(other)
        out = Value(self.data * other.data, _prev=(self, other), _op="*")

        def _backward():  # d(a b)/da = b: each input gets the *other* one's value
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad
        out._backward = _backward
        return out

    def __pow__(self, k):
        if not isinstance(k, (int, float)):
            raise TypeError(f"Value.__pow__: the exponent must be an int or float, got {type(k).__name__}")
        out = Value(self.data ** k, _prev=(self,), _op=f"**{k:g}")

        def _backward():  # d(x^k)/dx = k x^(k-1)
            self.grad += k * self.data ** (k - 1) * out.grad
        out._backward = _backward
        return out

    # ---- unary ops ----
    def tanh(self):
        t = math.tanh(self.data)
        out = Value(t, _prev=(self,), _op="tanh")

        def _backward():  # d tanh(x)/dx = 1 - tanh(x)^2: reuse the forward's output, no second tanh
            self.grad += (1.0 - t * t) * out.grad
        out._backward = _backward
        return out

    def exp(self):
        e = math.exp(self.data)
        out = Value(e, _prev=(self,), _op="exp")

        def _backward():  # d e^x/dx = e^x: the output is its own derivative
            self.grad += e * out.grad
        out._backward = _backward
        return out

    def relu(self):
        out = Value(max(self.data, 0.0), _prev=(self,), _op="relu")

        def _backward():  # slope 1 where the input was positive, 0 elsewhere (0 at exactly 0, as torch)
            self.grad += (self.data > 0) * out.grad
        out._backward = _backward
        return out

    def log(self):
        if self.data <= 0:
            raise ValueError(f"Value.log: needs a positive number, got {self.data}")
        out = Value(math.log(self.data), _prev=(self,), _op="log")

        def _backward():  # d ln(x)/dx = 1/x
            self.grad += out.grad / self.data
        out._backward = _backward
        return out

    # ---- everything else is built from the ops above ----
    def __neg__(self):
        return self * -1

    def __sub__(self, other):
        return self + (-_lift(other))

    def __truediv__(self, other):
        return self * _lift(other) ** -1

    def __radd__(self, other):
        return self + other

    def __rmul__(self, other):
        return self * other

    def __rsub__(self, other):
        return _lift(other) - self

    def __rtruediv__(self, other):
        return _lift(other) / self

    # ---- the backward pass ----
    def backward(self):
        """Fill .grad of every value this one depends on with d self / d value (grads accumulate: zero first)."""
        self.grad = 1.0  # d self / d self
        for node in reversed(topological_order(self)):
            node._backward()


def _lift(x) -> Value:
    return x if isinstance(x, Value) else Value(x)


def topological_order(root: Value) -> list[Value]:
    """Every node `root` depends on, each after all of its inputs (iterative DFS: deep graphs never recurse)."""
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
        elif id(node) not in seen:
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((p, False) for p in node._prev if id(p) not in seen)
    return order


def zero_grad(root: Value) -> None:
    """Set the grad of every node in root's graph to 0 (before a second backward)."""
    for node in topological_order(root):
        node.grad = 0.0


def neuron(xs, ws, b, label: str = "out") -> Value:
    """tanh(sum_i w_i x_i + b): the classic picture of one neuron, as a small graph."""
    act = sum((w * x for w, x in zip(ws, xs)), b)
    out = act.tanh()
    out.label = label
    return out


# ---------------------------------------------------------------------------------------------------------
# expressions typed by a learner: "(a*b + c).tanh()" -> a graph of Values, read safely (no eval)
# ---------------------------------------------------------------------------------------------------------

UNARY = ("tanh", "exp", "relu", "log")


def parse_expression(text: str, values: dict[str, float]) -> Value:
    """Build the graph of `text` over named inputs, e.g. parse_expression("(a*b + c).tanh()", {"a": 2, ...}).

    Allowed: numbers, the names in `values`, + - * / and ** (with a number as exponent), unary minus, and the
    methods .tanh() .exp() .relu() .log(). Anything else raises ValueError saying what was not understood;
    the text is parsed with `ast`, never evaluated. Leaves carry their names as labels.
    """
    import ast
    import operator

    if not text or not text.strip():
        raise ValueError("empty expression: type one, e.g. (a*b + c).tanh()")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"cannot read {text!r}: {e.msg}") from None
    leaves = {name: Value(v, name) for name, v in values.items()}
    binops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}

    def build(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in leaves:
                raise ValueError(f"unknown name {node.id!r}; known: {', '.join(leaves) or 'none'}")
            return leaves[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -_lift(build(node.operand))
        if isinstance(node, ast.BinOp) and type(node.op) in binops:
            return binops[type(node.op)](_lift(build(node.left)), build(node.right))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            k = build(node.right)
            if isinstance(k, Value):
                raise ValueError("the exponent of ** must be a number, e.g. a**2")
            return _lift(build(node.left)) ** k
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in UNARY
                and not node.args and not node.keywords):
            return getattr(_lift(build(node.func.value)), node.func.attr)()
        raise ValueError(f"not understood: {ast.unparse(node)!r} (use numbers, {', '.join(leaves)}, + - * / **, "
                         f"and .tanh() .exp() .relu() .log())")

    root = _lift(build(tree.body))
    root.label = root.label or "out"
    return root
