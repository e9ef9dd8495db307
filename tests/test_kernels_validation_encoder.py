"""encoder's entry points: bad ids, shapes and dtypes raise clear errors; the backward is a scatter-add."""
import numpy as np
import pytest

from gpt2lab.kernels.encoder import encoder_backward, encoder_forward

B, T, C, V, maxT = 2, 3, 4, 6, 5


def forward_args(inp=None):
    rng = np.random.default_rng(0)
    return {"out": np.zeros((B, T, C), np.float32),
            "inp": np.array([[1, 2, 1], [5, 0, 1]], np.int32) if inp is None else inp,
            "wte": rng.standard_normal((V, C)).astype(np.float32),
            "wpe": rng.standard_normal((maxT, C)).astype(np.float32)}


def backward_args(inp=None):
    f = forward_args(inp)
    return {"dwte": np.zeros((V, C), np.float32), "dwpe": np.zeros((maxT, C), np.float32),
            "dout": np.ones((B, T, C), np.float32), "inp": f["inp"]}


@pytest.mark.parametrize("bad_id", [V, -1, 50257])
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_rejects_token_ids_outside_the_vocabulary(bad_id, direction):
    inp = np.array([[1, 2, 1], [5, bad_id, 1]], np.int32)
    call = encoder_forward if direction == "forward" else encoder_backward
    args = forward_args(inp) if direction == "forward" else backward_args(inp)
    with pytest.raises(ValueError, match=rf"encoder_{direction}: token id {bad_id} in inp is outside "
                                         rf"the vocabulary \[0, {V}\)"):
        call(**args)


def test_rejects_more_positions_than_wpe_has():
    args = forward_args(np.zeros((B, maxT + 1), np.int32))
    args["out"] = np.zeros((B, maxT + 1, C), np.float32)
    with pytest.raises(ValueError, match=rf"encoder_forward: T={maxT + 1} positions but wpe has only "
                                         rf"maxT={maxT} rows"):
        encoder_forward(**args)


def test_rejects_wrong_dtype_shape_layout():
    args = forward_args()
    args["inp"] = args["inp"].astype(np.int64)
    with pytest.raises(TypeError, match=r"encoder_forward: inp must be int32 \(B,T\), got int64 \(2, 3\)"):
        encoder_forward(**args)
    args = forward_args()
    args["wpe"] = np.zeros((maxT, C + 1), np.float32)
    with pytest.raises(ValueError, match=r"encoder_forward: wpe must be float32 \(maxT,C\)"):
        encoder_forward(**args)
    args = forward_args()
    args["wte"] = np.zeros((C, V), np.float32).T
    with pytest.raises(ValueError, match="encoder_forward: wte must be C-contiguous"):
        encoder_forward(**args)
    args = backward_args()
    args["dout"] = np.zeros((B, T + 1, C), np.float32)
    with pytest.raises(ValueError, match=r"encoder_backward: dout must be float32 \(B,T,C\)"):
        encoder_backward(**args)


def test_forward_looks_up_rows():
    args = forward_args()
    encoder_forward(**args)
    inp, wte, wpe = args["inp"], args["wte"], args["wpe"]
    np.testing.assert_array_equal(args["out"], wte[inp] + wpe[None, :T])


def test_backward_counts_repeated_tokens_and_accumulates():
    """dout = 1 everywhere: dwte[v] = how often token v occurs, dwpe[t] = B for t < T; twice after two calls."""
    args = backward_args()
    encoder_backward(**args)
    encoder_backward(**args)
    counts = np.bincount(args["inp"].ravel(), minlength=V).astype(np.float32)  # token 1 occurs 3 times
    np.testing.assert_array_equal(args["dwte"], 2 * np.repeat(counts[:, None], C, axis=1))
    expected_dwpe = np.zeros((maxT, C), np.float32)
    expected_dwpe[:T] = 2 * B
    np.testing.assert_array_equal(args["dwpe"], expected_dwpe)
