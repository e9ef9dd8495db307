"""TrainingDashboard: watch a GPT-2 train, with every kernel checked live against PyTorch.

A thin view over `gpt2lab.explain.training`: loss curves and throughput (matplotlib, rendered to PNG into
Image widgets, which is safe from the training thread), a progress bar, the parity table (op x direction,
green/red) and the latest generated sample. Controls and outputs are attributes (`.progress.value`,
`.status.value`, `.parity.value`, `.sample.value`, `.loss_image.value`, `.steps`, `.lr`, `.batch`,
`.verify_every`, `.start_button`, `.stop_button`), so a test builds it, feeds it records and reads them back,
with no browser.

    dash = TrainingDashboard(make_backend=lambda: NumbaBackend(config, OptimConfig()), data=data,
                             run=RunConfig(steps=60, lr=1e-3), out="runs/tiny")
    dash                                              # show it; set steps, lr, batch, verify-every; press Start
    dash.start(backend, data, RunConfig(steps=300), out="runs/tiny", verify_every=10)   # or start from code
    ...                                               # the notebook stays responsive; Stop saves a checkpoint
    TrainingDashboard.from_log("runs/tiny/log.jsonl") # the same charts after the fact
"""
from __future__ import annotations

import dataclasses
import html
import threading
import time

import ipywidgets as W

from gpt2lab.explain.palette import FAIL_COLOR, OK_COLOR
from gpt2lab.explain.training import (latest, latest_parity, loss_curves, loss_figure, parity_html, read_log,
                                      speed_figure)

from ._view import show_figure


class TrainingDashboard(W.VBox):
    """Loss curves, tokens/s, progress, parity table and latest sample of one training run.

    total_steps: the progress bar's length (start() sets it from the run). redraw_every: seconds between chart
    redraws while training (a PNG per step would slow a fast run); the last step is always drawn.
    make_backend, data, run, out, encoding: what the Start button trains: a fresh `make_backend()` on `data`,
    with `run` (a RunConfig) as changed by the steps, lr, batch and verify-every controls. Without
    make_backend and data the controls only show the settings of a run started from code.
    """

    def __init__(self, total_steps: int = 0, title: str = "training", redraw_every: float = 1.0, *,
                 make_backend=None, data=None, run=None, out=None, encoding=None, verify_every: int = 0):
        from gpt2lab.gpt2.train import RunConfig
        self.title, self.redraw_every = title, redraw_every
        self.make_backend, self.data, self.out, self.encoding = make_backend, data, out, encoding
        self.run = run if run is not None else RunConfig(steps=max(total_steps, 1))
        self.records: list[dict] = []
        self.progress = W.IntProgress(value=0, min=0, max=max(total_steps, 1), description="step")
        self.status = W.HTML(value="<i>not started</i>")
        short = dict(layout=W.Layout(width="190px"), style={"description_width": "80px"})
        self.steps = W.BoundedIntText(value=self.run.steps, min=1, max=100_000, description="steps", **short)
        self.lr = W.FloatLogSlider(value=self.run.lr, base=10, min=-5, max=-1, step=0.1, readout_format=".1e",
                                   description="lr", style={"description_width": "30px"})
        self.batch = W.Dropdown(options=sorted({1, 2, 4, 8, 16, 32, self.run.batch}), value=self.run.batch,
                                description="batch", **short)
        self.verify_every = W.BoundedIntText(value=verify_every, min=0, max=100_000, description="verify every",
                                             tooltip="check every K-th step against PyTorch (0: never)", **short)
        self.start_button = W.Button(description="Start", icon="play", button_style="success",
                                     disabled=make_backend is None or data is None,
                                     tooltip="train a fresh model with these settings")
        self.stop_button = W.Button(description="Stop", icon="stop", button_style="danger", disabled=True,
                                    tooltip="stop after this step and save a checkpoint")
        self.loss_image, self.speed_image = W.Image(format="png"), W.Image(format="png")
        self.parity = W.HTML(value=parity_html(None))
        self.sample = W.HTML(value="")
        self.start_button.on_click(lambda _: self.start_from_controls())
        self.stop_button.on_click(lambda _: self.stop())
        self._controls = (self.steps, self.lr, self.batch, self.verify_every)
        super().__init__([W.HBox([self.steps, self.lr, self.batch, self.verify_every]),
                          W.HBox([self.start_button, self.stop_button, self.progress]), self.status,
                          W.HBox([self.loss_image, self.speed_image]), self.parity, self.sample])
        self.thread: threading.Thread | None = None
        self.result = self.error = None
        self._stop = threading.Event()
        self._last_draw = 0.0

    # ---- feeding it records
    def update(self, record: dict, force: bool = False) -> None:
        """Take one step's log record (the trainer's on_step record) and refresh what it changes."""
        self.records.append(record)
        self.progress.value = min(int(record.get("step", 0)), self.progress.max)
        self.status.value = self._status_html(record)
        if record.get("parity") is not None:
            self.parity.value = parity_html(record["parity"])
        if record.get("sample") is not None:
            self._show_sample(record)
        now = time.monotonic()
        if force or record.get("val_loss") is not None or now - self._last_draw >= self.redraw_every:
            self.draw()
            self._last_draw = now

    def _show_sample(self, record: dict) -> None:
        self.sample.value = ("<b>latest sample</b> (step {}):<pre style='white-space:pre-wrap'>{}</pre>"
                             .format(record.get("step"), html.escape(str(record["sample"]))))

    def draw(self) -> None:
        """Redraw the loss and throughput charts from every record so far."""
        curves = loss_curves(self.records)
        show_figure(self.loss_image, loss_figure(curves, self.title))
        show_figure(self.speed_image, speed_figure(curves))

    def _status_html(self, r: dict) -> str:
        parts = [f"step {r.get('step')}", f"loss {r['loss']:.4f}" if r.get("loss") is not None else ""]
        val = latest(self.records, "val_loss")
        if val is not None:
            parts.append(f"val {val:.4f}")
        if r.get("tokens_per_s"):
            parts.append(f"{r['tokens_per_s']:,.0f} tok/s")
        parity = latest_parity(self.records)
        if parity is not None:
            ok = parity["summary"]["ok"]
            parts.append(f"<span style='color:{OK_COLOR if ok else FAIL_COLOR}'>parity "
                         f"{'OK' if ok else 'MISMATCH'}</span>")
        return " &nbsp; ".join(p for p in parts if p)

    # ---- training in a background thread
    def run_from_controls(self):
        """self.run with the steps, lr and batch the controls show (a new RunConfig; self.run is unchanged)."""
        return dataclasses.replace(self.run, steps=int(self.steps.value), lr=float(self.lr.value),
                                   batch=int(self.batch.value))

    def start_from_controls(self) -> threading.Thread | None:
        """What Start does: train a fresh make_backend() on data with the controls' settings. Returns the thread,
        or None (with a message) when there is nothing to train or a run is going."""
        if self.make_backend is None or self.data is None:
            self._say("Start needs a backend and data: TrainingDashboard(make_backend=..., data=...)")
            return None
        if self.thread is not None and self.thread.is_alive():
            self._say("A run is going: Stop it first.")
            return None
        try:
            backend = self.make_backend()
        except Exception as e:  # shown, never thrown into the page
            self.status.value = (f"<span style='color:{FAIL_COLOR}'>could not build the model: "
                                 f"{html.escape(repr(e))}</span>")
            return None
        # a fresh model each Start: the run before it in the same folder is replaced, not resumed
        return self.start(backend, self.data, self.run_from_controls(), self.out,
                          verify_every=int(self.verify_every.value), encoding=self.encoding, overwrite=True)

    def start(self, backend, data, run, out=None, *, verify_every: int = 0, on_mismatch: str = "warn",
              json_log=None, encoding=None, resume: bool = False, overwrite: bool = False) -> threading.Thread:
        """Train `backend` on `data` with RunConfig `run` in a background thread; returns the thread at once.

        verify_every > 0 wraps a numba backend in parity.VerifiedBackend (steps 1, 1+K, ... checked against
        PyTorch); on_mismatch "stop" halts at the first mismatch. The result lands in `.result` (a
        TrainResult), an exception in `.error`. `stop()` (the Stop button) ends it after the current step and
        the trainer saves a checkpoint to `out`. resume / overwrite: as train()'s, for an `out` that holds a run.
        """
        if self.thread is not None and self.thread.is_alive():
            raise RuntimeError("TrainingDashboard.start: a run is already going; stop() or join() it first")
        from gpt2lab.gpt2.train import train
        verified = None
        if verify_every:
            from gpt2lab.gpt2.kernel_backend import VerifiedBackend
            verified = backend = VerifiedBackend(backend, verify_every, on_mismatch, log=self._say)
        self.progress.max = max(run.steps, 1)
        self.records, self.result, self.error = [], None, None
        self._stop.clear()
        self._show_settings(run, verify_every)
        self.stop_button.disabled = False

        def on_step(record):  # the record carries the parity figures of a verified step (step_extras)
            self.update(record)
            if verified is not None:
                verified.on_step(record)   # raises ParityMismatch on "stop"
            if self._stop.is_set():
                raise KeyboardInterrupt    # the trainer's stop signal: it saves a checkpoint and returns

        def work():
            try:
                self.result = train(backend, data, run, out, json_log=json_log, progress=False, on_step=on_step,
                                    encoding=encoding, log=self._say, resume=resume, overwrite=overwrite)
            except Exception as e:  # shown in the dashboard; never lost in a thread
                self.error = e
                self.status.value = f"<span style='color:{FAIL_COLOR}'>error: {html.escape(repr(e))}</span>"
            finally:
                self.stop_button.disabled = True
                self.start_button.disabled = self.make_backend is None or self.data is None
                for control in self._controls:
                    control.disabled = False
                if self.records:
                    self.draw()
                self._finish_status(verified)

        self.thread = threading.Thread(target=work, name="gpt2lab-train", daemon=True)
        self.thread.start()
        return self.thread

    def _show_settings(self, run, verify_every: int) -> None:
        """The controls show the run that is going, and are locked while it goes."""
        if run.batch not in self.batch.options:
            self.batch.options = sorted({*self.batch.options, run.batch})
        self.steps.value, self.lr.value, self.batch.value = run.steps, run.lr, run.batch
        self.verify_every.value = verify_every
        for control in (*self._controls, self.start_button):
            control.disabled = True

    def _say(self, text: str) -> None:
        """Trainer and parity messages: the latest one under the progress bar."""
        self.status.value = html.escape(text).replace("\n", "<br>")

    def _finish_status(self, verified=None) -> None:
        r = self.result
        if r is None:
            return
        how = "stopped" if r.stopped else "done"
        val = f", val loss {r.val_loss:.4f}" if r.val_loss is not None else ""
        self.status.value = f"<b>{how}</b> at step {r.step}{val}, {r.tokens_per_s:,.0f} tokens/s"
        if r.stopped in ("mismatch", "non-finite"):  # what was kept, and where the rest went
            self.status.value += f"<br>{html.escape(r.message or '')}"
        if verified is not None and verified.mismatch is not None:  # say why, in red
            from gpt2lab.gpt2.parity import format_mismatch
            self.status.value += (f"<br><span style='color:{FAIL_COLOR}'>"
                                  f"{html.escape(format_mismatch(verified.mismatch))}</span>")

    def stop(self) -> None:
        """Ask the run to stop after the current step (the trainer then writes its checkpoint)."""
        self._stop.set()
        self.stop_button.disabled = True

    def join(self, timeout: float | None = None):
        """Wait for the training thread; returns its TrainResult (None if still running or failed)."""
        if self.thread is not None:
            self.thread.join(timeout)
        return self.result

    # ---- after the fact
    @classmethod
    def from_log(cls, path, title: str | None = None) -> "TrainingDashboard":
        """A dashboard drawn from a JSON training log: the same charts, parity table and sample."""
        records = read_log(path)
        dash = cls(total_steps=max((r.get("step", 0) for r in records), default=0), title=title or str(path))
        dash.records = records
        if records:
            dash.progress.value = min(int(records[-1].get("step", 0)), dash.progress.max)
            dash.status.value = dash._status_html(records[-1]) + " &nbsp; <i>(from log)</i>"
            dash.parity.value = parity_html(latest_parity(records))
            with_sample = [r for r in records if r.get("sample") is not None]
            if with_sample:
                dash._show_sample(with_sample[-1])
            dash.draw()
        return dash
