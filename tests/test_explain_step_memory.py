"""explain/step_memory.py: a step's buffers in groups that add up to buffers.step_bytes, and the figure's torch
lines drawn only from a record's matching row."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from gpt2lab.explain import gpu_recorded  # noqa: E402
from gpt2lab.explain import step_memory as SM  # noqa: E402
from gpt2lab.gpt2 import buffers  # noqa: E402
from gpt2lab.gpt2.config import GPTConfig  # noqa: E402

CASES = [(GPTConfig.preset("tiny"), 8, 64), (GPTConfig.preset("small"), 8, 256), (GPTConfig.preset("gpt2"), 4, 64),
         (GPTConfig.preset("gpt2"), 4, 1024),
         (GPTConfig(block_size=16, vocab_size=37, n_layer=3, n_head=2, n_embd=6), 3, 5)]   # nothing a power of two


@pytest.mark.parametrize("config, B, T", CASES)
def test_every_way_adds_up_to_step_bytes_exactly(config, B, T):
    rows = SM.step_memory(config, B, T)
    assert [r["way"] for r in rows] == [w for w, _, _ in SM.WAYS]
    assert [r["switches"]["fused"] for r in rows] == [False, False, True]   # both attention paths
    for r in rows:
        want = sum(buffers.step_bytes(config, B, T, **r["switches"]).values())
        assert list(r["groups"]) == list(SM.GROUPS)
        assert sum(r["groups"].values()) == r["total"] == want


@pytest.mark.parametrize("config, B, T", CASES)
def test_the_attention_matrix_is_L_B_NH_T_T_floats_and_gone_on_the_fused_path(config, B, T):
    L, NH, V = config.n_layer, config.n_head, config.vocab_size
    for r in SM.step_memory(config, B, T):
        fused, lean_head = r["switches"]["fused"], r["switches"]["lean"] and r["switches"]["fused_head"]
        assert r["groups"]["attention matrix att"] == (0 if fused else 4 * L * B * NH * T * T)
        # logits and probs: B*T*V floats each; the lean fused classifier keeps no probs
        assert r["groups"]["logits and probs"] == 4 * B * T * V * (1 if lean_head else 2)
        params = 4 * config.num_params()
        assert (r["groups"]["parameters"], r["groups"]["gradients"], r["groups"]["AdamW m and v"]) == \
               (params, params, 2 * params)


def test_the_lean_way_saves_the_blocks_activation_gradients_only():
    parity, lean, _ = SM.step_memory(GPTConfig.preset("gpt2"), 4, 1024)
    saved = {g: parity["groups"][g] - lean["groups"][g] for g in SM.GROUPS}
    assert {g for g, b in saved.items() if b} == {"activation gradients"}
    assert round(saved["activation gradients"] / SM.GiB, 2) == 2.19


def test_a_grouping_that_leaves_a_buffer_out_is_refused(monkeypatch):
    """The groups are checked against step_bytes: probs left out of the activations, or a buffer step_bytes
    counts and the grouping does not know (kernel scratch, say), is a ValueError, never a short bar."""
    config = GPTConfig.preset("tiny")
    no_probs = lambda *a, **k: buffers.act_shapes(*a, **{**k, "probs": False})  # noqa: E731
    monkeypatch.setattr(SM, "act_shapes", no_probs)
    with pytest.raises(ValueError, match="regroup"):
        SM.step_memory(config, 8, 64)
    monkeypatch.undo()
    monkeypatch.setattr(SM, "step_bytes", lambda *a, **k: {**buffers.step_bytes(*a, **k), "scratch": 4})
    with pytest.raises(ValueError, match="add up to"):
        SM.way_groups(config, 8, 64)


def _record(*steps):
    return {"device": "GPU X", "date": "2027-01-02",
            "steps": [{"config": c, "B": B, "T": T, "ours_ms": 1.0, "torch_ms": 1.0, "torch_mib": mib}
                      for c, B, T, mib in steps]}


def _lines(fig):
    return {line.get_gid(): line.get_xdata()[0] for line in fig.axes[0].lines}


def test_the_figure_draws_torchs_peak_and_the_goal_from_the_matching_row_only():
    fig = SM.memory_figure("gpt2", 4, 1024, record=_record(("gpt2", 4, 64, 100.0), ("gpt2", 4, 1024, 9523.0)))
    assert _lines(fig) == {"torch_peak": 9523 / 1024, "goal": 1.2 * 9523 / 1024}
    title = fig.axes[0].get_title()
    assert "counted from the buffers" in title and "measured on GPU X, 2027-01-02" in title
    # one stacked bar per way and group, each segment's width its group's GiB
    rows = SM.step_memory(GPTConfig.preset("gpt2"), 4, 1024)
    widths = sorted(round(p.get_width(), 9) for p in fig.axes[0].patches)
    assert widths == sorted(round(r["groups"][g] / SM.GiB, 9) for r in rows for g in SM.GROUPS)
    plt.close(fig)
    for record in (_record(("gpt2", 4, 64, 100.0), ("tiny", 4, 1024, 50.0)), _record(("gpt2", 4, 1024, None)),
                   None):
        fig = SM.memory_figure("gpt2", 4, 1024, record=record)
        assert _lines(fig) == {} and "no PyTorch peak recorded" in fig.axes[0].get_title()
        plt.close(fig)


def test_the_recorded_h100_peak_is_read_for_its_own_size_only():
    h100 = next(r for r in gpu_recorded.RECORDS if r["date"] == "2026-11-26")
    assert SM.torch_peak_mib(h100, "gpt2", 4, 1024) == 9523
    assert SM.torch_peak_mib(h100, "gpt2", 4, 512) is None and SM.torch_peak_mib(h100, "small", 4, 1024) is None


def test_the_table_gives_each_ways_gib_and_its_ratio_to_a_measured_peak():
    table = SM.memory_table([("gpt2", 4, 1024), ("tiny", 4, 32)], record=_record(("gpt2", 4, 1024, 9523.0)))
    head, gpt2, tiny = table.splitlines()[1:4]
    assert head.split() == ["config", "B", "T", "parity", "lean", "lean+fused", "GPU", "torch"]
    totals = [r["total"] for r in SM.step_memory(GPTConfig.preset("gpt2"), 4, 1024)]
    want = [f"{t / SM.GiB:.2f} ({t / 2 ** 20 / 9523:.2f}x)" for t in totals]
    assert gpt2.split() == ["gpt2", "4", "1024", *" ".join(want).split(), "9.30"]
    assert "(" not in tiny and tiny.split()[-1] == "-"
    assert table.splitlines()[-1] == "torch peak: measured on GPU X, 2027-01-02"


def test_lesson_6_cites_the_figures_numbers():
    """The prose beside the figure quotes its GiB: when the buffers change, the words must change with them."""
    from pathlib import Path
    text = (Path(__file__).parent.parent / "notebooks" / "06_mlp.py").read_text(encoding="utf-8")
    parity, lean, _ = (r["groups"] for r in SM.step_memory(GPTConfig.preset("gpt2"), 4, 1024))
    gib = lambda b: f"{b / SM.GiB:.2f}"  # noqa: E731
    assert f"{gib(lean['attention matrix att'])} GiB over 12 layers" in text
    assert f"{gib(lean['logits and probs'] / 2)} GiB apiece" in text
    assert f"{gib(lean['activation gradients'])} GiB in place of {gib(parity['activation gradients'])}" in text
    assert 'SM.memory_figure("gpt2", B=4, T=1024, record=report.record)' in text


@pytest.mark.parametrize("name, B, T", SM.DOC_CASES + (("tiny", 4, 128),))
def test_the_figure_reads_at_every_recorded_size(name, B, T):
    """9 pt text at most the page's width, nothing off the figure, no two texts overlapping (gpu_speed's check),
    with the torch lines where the record has them and without where it does not."""
    from test_explain_gpu_speed import _readable
    fig = SM.memory_figure(name, B, T, record=gpu_recorded.latest())
    _readable(fig)
    plt.close(fig)
