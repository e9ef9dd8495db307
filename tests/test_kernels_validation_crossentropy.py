"""crossentropy's entry points: bad inputs rejected by name, targets range-checked, stable, accumulating."""
import numpy as np
import pytest

from gpt2lab.kernels.crossentropy import crossentropy_backward, crossentropy_forward


def _buffers(B=2, T=3, V=11, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((B, T, V), dtype=np.float32)
    targets = rng.integers(0, V, (B, T)).astype(np.int32)
    return np.zeros((B, T), np.float32), np.zeros_like(logits), logits, targets


def test_crossentropy_rejects_wrong_dtype_shape():
    losses, probs, logits, targets = _buffers()
    with pytest.raises(TypeError, match=r"crossentropy_forward: targets must be int32 \(B,T\), got int64"):
        crossentropy_forward(losses, probs, logits, targets.astype(np.int64))
    with pytest.raises(ValueError, match=r"crossentropy_forward: probs must be float32 \(B,T,V\).*got float32 \(2, 3, 10\)"):
        crossentropy_forward(losses, probs[..., :10].copy(), logits, targets)
    with pytest.raises(ValueError, match=r"crossentropy_forward: losses must be float32 \(B,T\)"):
        crossentropy_forward(losses[:1].copy(), probs, logits, targets)
    with pytest.raises(ValueError, match=r"crossentropy_backward: dlosses must be float32 \(B,T\)"):
        crossentropy_backward(np.zeros_like(logits), np.zeros(6, np.float32), probs, targets)


@pytest.mark.parametrize("bad", [-1, 11])
def test_crossentropy_rejects_targets_outside_the_vocabulary(bad):
    losses, probs, logits, targets = _buffers()
    targets[1, 2] = bad
    with pytest.raises(ValueError, match=rf"targets must be in \[0, V\) = \[0, 11\), got {bad}"):
        crossentropy_forward(losses, probs, logits, targets)
    with pytest.raises(ValueError, match=rf"crossentropy_backward: targets must be in .*got {bad}"):
        crossentropy_backward(np.zeros_like(logits), losses, probs, targets)


def test_crossentropy_is_stable_for_huge_logits_and_backward_accumulates():
    losses, probs, logits, targets = _buffers()
    logits[0, 0] += 1000.0  # without the max subtraction exp() would overflow to inf, then nan
    logits[0, 1, targets[0, 1]] -= 1000.0  # the target's prob underflows to 0: the loss must stay finite
    crossentropy_forward(losses, probs, logits, targets)
    assert np.all(np.isfinite(losses)) and np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    assert losses[0, 1] > 900.0
    dlogits = np.ones_like(logits)
    dlosses = np.full(losses.shape, 0.5, np.float32)
    for _ in range(2):
        crossentropy_backward(dlogits, dlosses, probs, targets)
    onehot = np.eye(11, dtype=np.float32)[targets]
    np.testing.assert_allclose(dlogits, 1 + 2 * 0.5 * (probs - onehot), rtol=1e-6, atol=1e-6)
