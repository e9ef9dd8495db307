"""explain.embeddings: lookup = one-hot matmul, backward = scatter-add (vs torch), neighbours, aligned PCA, figures."""
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from gpt2lab.datasets import gpt2_encoding  # noqa: E402
from gpt2lab.explain import embeddings as E  # noqa: E402
from gpt2lab.explain.palette import RUNNING_EXAMPLE  # noqa: E402
from gpt2lab.explain.tokenize import token_labels  # noqa: E402

RNG = np.random.default_rng(0)
V, MAXT, C = 60, 16, 8
WTE = RNG.standard_normal((V, C)).astype(np.float32)
WPE = RNG.standard_normal((MAXT, C)).astype(np.float32)
IDS = np.array([[5, 9, 5, 5, 2], [0, 59, 59, 1, 2]])


def test_lookup_equals_one_hot_matmul_and_torch():
    oh = E.one_hot(IDS[0], V)
    assert oh.shape == (5, V) and np.all(oh.sum(1) == 1)
    np.testing.assert_array_equal(oh @ WTE, WTE[IDS[0]])
    x = E.embed(WTE, WPE, IDS)
    dx = RNG.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_allclose(x, E.torch_encoder(WTE, WPE, IDS, dx)["x"], rtol=1e-6)


def test_scatter_add_is_the_one_hot_transpose_and_matches_torch():
    dx = RNG.standard_normal((2, 5, C)).astype(np.float32)
    dwte, dwpe = E.scatter_add_backward(dx, IDS, V, MAXT)
    ref = E.torch_encoder(WTE, WPE, IDS, dx)
    np.testing.assert_allclose(dwte, ref["dwte"], atol=1e-6)
    np.testing.assert_allclose(dwpe, ref["dwpe"], atol=1e-6)
    # token 5 occurs three times in row 0: its gradient is the sum of the three
    np.testing.assert_allclose(dwte[5], dx[0, 0] + dx[0, 2] + dx[0, 3], atol=1e-6)
    assert not dwte[3].any()  # a token that never occurs gets exactly zero
    np.testing.assert_allclose(dwte, E.one_hot(IDS.ravel(), V).T @ dx.reshape(-1, C), atol=1e-5)


def test_nearest_neighbours_by_cosine():
    wte = np.array([[1, 0], [0.9, 0.1], [-1, 0], [0, 1], [10, 0.5]], np.float32)
    nb = E.nearest_neighbours(wte, 0, k=2)
    assert [i for i, _ in nb] == [4, 1] and nb[0][1] == pytest.approx(np.cos(np.arctan(0.05)), rel=1e-5)
    assert [i for i, _ in E.nearest_neighbours(wte, 0, k=1, candidates=[0, 2, 3])] == [3]


def test_aligned_pca_undoes_flips_and_rotations():
    base = RNG.standard_normal((30, 6)) * np.array([5, 2, 0.1, 0.1, 0.1, 0.1])
    Q, _ = np.linalg.qr(RNG.standard_normal((6, 6)))
    frames = [base @ Q, -base @ Q * 0.01, base]  # same shape up to rotation, sign and scale
    coords = E.aligned_pca(frames)
    assert coords.shape == (3, 30, 2)
    for f in range(2):
        np.testing.assert_allclose(coords[f], coords[2], atol=1e-6)


def test_position_similarity_is_symmetric_with_unit_diagonal():
    sim = E.position_similarity(WPE, 10)
    assert sim.shape == (10, 10)
    np.testing.assert_allclose(np.diag(sim), 1, atol=1e-6)
    np.testing.assert_allclose(sim, sim.T, atol=1e-6)


def test_frequent_tokens_and_figures():
    enc = gpt2_encoding()
    ids = enc.encode_ordinary(RUNNING_EXAMPLE)
    counts = E.token_counts(np.array(ids * 3 + [enc.encode_ordinary(" question")[0]]), enc.n_vocab)
    top = E.frequent_tokens(counts, enc, n=3)
    assert token_labels(top, enc)[0] in ("␣be", "␣question")
    assert all(token_labels(top, enc)[i].startswith("␣") for i in range(3))
    labels = token_labels(ids, enc)
    assert labels[:2] == ["To", "␣be"]
    rng = np.random.default_rng(1)
    wte, wpe = rng.standard_normal((enc.n_vocab, 16)), rng.standard_normal((32, 16))
    fig = E.embedding_figure(wte, wpe, ids, labels)
    assert "(13, 16)" in fig.axes[0].get_title()
    fig = E.scatter_add_figure(rng.standard_normal((len(ids), 16)), ids, labels)
    assert any("×2" in t.get_text() for t in fig.axes[1].get_yticklabels())  # " be" occurs twice
    assert "(32, 32)" in E.position_similarity_figure(E.position_similarity(wpe)).axes[0].get_title()
    anim = E.pca_animation(E.aligned_pca([wte[ids], wte[ids] * 2]), ids, labels, steps=[0, 10])
    assert "<script" in anim.to_jshtml()


def test_checkpoint_tables_keep_only_the_rows_asked_for(tmp_path):
    from gpt2lab.gpt2.checkpoint import save_checkpoint
    from gpt2lab.gpt2.config import GPTConfig
    from gpt2lab.gpt2.model import init_params

    cfg = GPTConfig.preset("tiny", vocab_size=40, block_size=8, n_layer=1)
    frames = []
    for step in (0, 5):
        params = init_params(cfg, seed=step)
        path = save_checkpoint(tmp_path / f"ckpt_{step:06d}.pt", dict(kind="frame", config=cfg.to_dict(), step=step,
                                                                      backend="torch", params=params))
        frames.append((step, path))
    steps, rows, wpes = E.checkpoint_tables(frames, [3, 7, 3])
    assert steps == [0, 5] and rows.shape == (2, 3, 128) and wpes.shape == (2, 8, 128)
    np.testing.assert_array_equal(rows[1], init_params(cfg, seed=5)["transformer.wte.weight"][[3, 7, 3]])


def test_uncluttered_drops_labels_that_would_overlap():
    xy = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [0.0, 0.2]])
    show = E.uncluttered(xy, ["king", "queen", "lord", "duke"], box=(0.2, 0.3))
    assert show.tolist() == [True, False, True, False]   # queen sits on king; duke's box reaches king's
    assert E.uncluttered(xy, ["a", "b", "c", "d"], box=(0.05, 0.1)).all()   # small labels: all fit
