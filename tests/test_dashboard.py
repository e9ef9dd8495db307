"""explain.training (log -> curves, parity table) and widgets.TrainingDashboard, without a browser."""
import json

import numpy as np
import pytest

from gpt2lab.datasets import TokenData
from gpt2lab.explain.palette import FAIL_COLOR, OK_COLOR
from gpt2lab.explain.training import (latest_parity, loss_curves, max_val_difference, parity_html, parity_table,
                                      read_log)
from gpt2lab.gpt2.config import GPTConfig
from gpt2lab.gpt2.train import RunConfig, TorchBackend
from gpt2lab.widgets import TrainingDashboard

TINY = GPTConfig(block_size=16, vocab_size=64, n_layer=2, n_head=2, n_embd=32)


def parity(step, bad=None):
    """A parity report like gpt2/parity.py writes; `bad` = (op, direction, tensor) of one failing row."""
    rows = []
    for op, direction, tensor, layer in (("layernorm", "fwd", "ln1", 0), ("layernorm", "bwd", "dresidual2", 1),
                                         ("gelu", "bwd", "dfch", 1), ("adamw", "step", "wte", None)):
        ok = (op, direction, tensor) != bad
        rows.append({"step": step, "op": op, "layer": layer, "direction": direction, "tensor": tensor,
                     "max_abs": 1e-9 if ok else 3e-3, "torch32_abs": 1e-9, "scale": 0.1,
                     "ratio": 1.0 if ok else 3e6,
                     "ok": ok})
    failed = [r for r in rows if not r["ok"]]
    return {"summary": {"step": step, "ok": not failed, "checked": len(rows), "failed": len(failed),
                        "first_failure": failed[0] if failed else None, "worst": {}}, "rows": rows}


def records(n=6, bad_at=None):
    out = []
    for s in range(1, n + 1):
        r = {"step": s, "loss": 4.0 - 0.1 * s, "lr": 1e-3, "tokens_per_s": 1000.0 + s, "grad_norm": 1.0}
        if s % 3 == 0:
            r.update(val_loss=4.1 - 0.1 * s, sample=f"sample <{s}>")
        r["parity"] = parity(s, bad=("gelu", "bwd", "dfch") if s == bad_at else None)
        out.append(r)
    return out


def write_log(path, recs, partial_tail=True):
    text = "".join(json.dumps(r) + "\n" for r in recs)
    path.write_text(text + ('{"step": 99, "lo' if partial_tail else ""))  # a run still writing its line


def test_read_log_and_curves(tmp_path):
    write_log(tmp_path / "log.jsonl", records(6))
    recs = read_log(tmp_path / "log.jsonl")
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5, 6]      # the half-written line is skipped
    c = loss_curves(recs)
    assert c.steps == [1, 2, 3, 4, 5, 6] and c.train_loss[0] == pytest.approx(3.9)
    assert c.val_steps == [3, 6] and c.val_loss == pytest.approx([3.8, 3.5])
    assert c.tokens_per_s[-1] == 1006.0


def test_max_val_difference():
    a, b = records(6), records(6)
    b[5]["val_loss"] += 0.25
    assert max_val_difference(a, b) == (pytest.approx(0.25), 6)
    assert max_val_difference(a, [])[1] is None


def test_parity_table_colours_and_order():
    cells = parity_table(parity(4, bad=("gelu", "bwd", "dfch")))
    assert [(c.op, c.direction) for c in cells] == [("layernorm", "fwd"), ("layernorm", "bwd"), ("gelu", "bwd"),
                                                    ("adamw", "step")]
    gelu = cells[2]
    assert not gelu.ok and gelu.color == FAIL_COLOR and gelu.worst == "dfch (layer 1)"
    assert cells[0].ok and cells[0].color == OK_COLOR
    page = parity_html(parity(4, bad=("gelu", "bwd", "dfch")))
    assert FAIL_COLOR in page and OK_COLOR in page and "FAIL 1/1" in page and "3 of 4" in page
    assert "no verified step" in parity_html(None) and parity_table(None) == []


def test_dashboard_update_changes_every_view():
    dash = TrainingDashboard(total_steps=6)
    before = (dash.loss_image.value, dash.parity.value, dash.sample.value, dash.status.value)
    for r in records(6, bad_at=5):
        dash.update(r)
    assert dash.progress.value == 6
    assert dash.loss_image.value != before[0] and dash.loss_image.value[:4] == b"\x89PNG"
    assert dash.speed_image.value[:4] == b"\x89PNG"
    assert "sample &lt;6&gt;" in dash.sample.value              # the latest sample, escaped
    assert "step 6" in dash.parity.value and FAIL_COLOR not in dash.parity.value  # step 6 passed again
    assert "val 3.5000" in dash.status.value


def test_dashboard_from_log(tmp_path):
    write_log(tmp_path / "log.jsonl", records(6, bad_at=6))
    dash = TrainingDashboard.from_log(tmp_path / "log.jsonl")
    assert dash.progress.value == 6 and dash.progress.max == 6
    assert dash.loss_image.value[:4] == b"\x89PNG"
    assert FAIL_COLOR in dash.parity.value and "MISMATCH" in dash.status.value
    assert latest_parity(dash.records)["summary"]["step"] == 6
    assert "sample &lt;6&gt;" in dash.sample.value


def token_data(seed=0):
    rng = np.random.default_rng(seed)
    return TokenData(train=rng.integers(0, 64, 3000).astype(np.uint16), val=rng.integers(0, 64, 500).astype(np.uint16))


def test_dashboard_trains_in_a_thread(tmp_path):
    dash = TrainingDashboard()
    run = RunConfig(steps=4, batch=2, seq=8, eval_every=2, eval_batches=1, ckpt_every=0, sample_tokens=4)
    dash.start(TorchBackend(TINY, seed=0), token_data(), run, tmp_path, json_log=tmp_path / "log.jsonl")
    result = dash.join(timeout=120)
    assert dash.error is None and result is not None and result.step == 4 and not result.interrupted
    assert dash.progress.value == 4 and "done" in dash.status.value and dash.stop_button.disabled
    assert dash.sample.value and dash.loss_image.value[:4] == b"\x89PNG"
    assert len(read_log(tmp_path / "log.jsonl")) == 4 and (tmp_path / "latest.pt").is_file()


def test_start_button_trains_with_the_settings_of_the_controls(tmp_path):
    made = []

    def make_backend():
        made.append(TorchBackend(TINY, seed=0))
        return made[-1]

    run = RunConfig(steps=50, batch=8, seq=8, eval_every=0, eval_batches=1, ckpt_every=0, sample_tokens=0)
    dash = TrainingDashboard(make_backend=make_backend, data=token_data(), run=run, out=tmp_path)
    assert not dash.start_button.disabled and (dash.steps.value, dash.batch.value) == (50, 8)
    dash.steps.value, dash.lr.value, dash.batch.value = 3, 2e-3, 2
    dash.start_button.click()
    assert dash.steps.disabled and dash.start_button.disabled      # locked while it runs
    result = dash.join(timeout=120)
    assert dash.error is None and result.step == 3 and len(made) == 1
    assert [r["lr"] for r in dash.records][-1] <= 2e-3 and not dash.steps.disabled and not dash.start_button.disabled
    dash.verify_every.value = 0
    assert dash.run_from_controls().batch == 2 and dash.run.batch == 8       # the recipe given is not changed


def test_start_without_a_backend_says_what_it_needs():
    dash = TrainingDashboard()
    assert dash.start_button.disabled
    assert dash.start_from_controls() is None and "make_backend" in dash.status.value


def test_stop_button_stops_with_a_checkpoint(tmp_path):
    dash = TrainingDashboard()
    run = RunConfig(steps=10_000, batch=2, seq=8, eval_every=0, eval_batches=1, ckpt_every=0, sample_tokens=0)
    original = dash.update

    def update(record, force=False):   # press Stop from the "notebook" once training is under way
        original(record, force)
        if record["step"] == 3:
            dash.stop_button.click()
    dash.update = update
    dash.start(TorchBackend(TINY, seed=0), token_data(), run, tmp_path)
    result = dash.join(timeout=120)
    assert result is not None and result.interrupted and result.step == 3
    assert (tmp_path / "latest.pt").is_file() and "stopped" in dash.status.value


def test_dashboard_shows_live_parity_of_the_numba_backend(tmp_path):
    from gpt2lab.gpt2.kernel_backend import NumbaBackend
    dash = TrainingDashboard()
    run = RunConfig(steps=3, batch=2, seq=8, eval_every=0, eval_batches=1, ckpt_every=0, sample_tokens=0)
    dash.start(NumbaBackend(TINY, seed=0), token_data(), run, tmp_path, verify_every=2)
    result = dash.join(timeout=120)
    assert dash.error is None and result.step == 3
    assert [("parity" in r) for r in dash.records] == [True, False, True]
    assert "parity vs PyTorch, step 3" in dash.parity.value and OK_COLOR in dash.parity.value
    assert FAIL_COLOR not in dash.parity.value and "adamw" in dash.parity.value


def test_dashboard_stops_on_a_parity_mismatch(tmp_path):
    from gpt2lab.gpt2.faults import inject
    from gpt2lab.gpt2.kernel_backend import NumbaBackend
    dash = TrainingDashboard()
    run = RunConfig(steps=5, batch=2, seq=8, eval_every=0, eval_batches=1, ckpt_every=0, sample_tokens=0)
    backend = NumbaBackend(TINY, seed=0)
    with inject("crossentropy_backward_no_onehot", backend):
        dash.start(backend, token_data(), run, tmp_path, verify_every=1, on_mismatch="stop")
        result = dash.join(timeout=120)
    assert result.stopped == "mismatch" and result.step == 1 and not (tmp_path / "latest.pt").exists()
    assert (tmp_path / "mismatch_step000001.pt").is_file()  # the mismatching state: its own file, not latest.pt
    assert "stopped" in dash.status.value and "crossentropy" in dash.status.value and "dlogits" in dash.status.value
    assert "mismatch_step000001.pt" in dash.status.value
    assert FAIL_COLOR in dash.parity.value
