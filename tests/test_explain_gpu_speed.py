"""Lesson 6's GPU section: recorded figures are labelled as recorded, and the pictures are computed from them."""
import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from gpt2lab.explain import gpu_recorded, gpu_speed  # noqa: E402


def test_without_a_gpu_the_report_is_a_record_and_says_so():
    report = gpu_speed.speed_report()
    assert not report.live and report.record is gpu_recorded.latest()
    line = report.source()
    assert "recorded on NVIDIA H200" in line and "2026-11-27" in line and "nothing here was measured now" in line
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        gpu_speed.speed_report(measure=True)


def test_every_record_names_its_device_date_software_and_code():
    for r in gpu_recorded.RECORDS:
        assert all(r[k] for k in ("device", "date", "software", "code", "steps", "op_ratio"))


def test_the_step_table_computes_the_ratio_from_the_times():
    record = {"device": "x", "date": "d", "software": "s", "code": "c",
              "steps": [{"config": "tiny", "B": 8, "T": 64, "ours_ms": 30.0, "torch_ms": 6.0, "ours_mib": None,
                         "torch_mib": 10}]}
    table = gpu_speed.step_table(gpu_speed.SpeedReport(record, live=True))
    row = table.splitlines()[1].split()
    assert row[:7] == ["tiny", "8", "64", "30.0", "6.0", "5.00", "-"]
    assert gpu_speed.SpeedReport(record, live=True).source() == "measured now on this machine's x"


def test_the_ops_figure_has_one_bar_per_measured_value():
    report = gpu_speed.speed_report(measure=False)
    fig = gpu_speed.ops_figure(report)
    ratios = report.record["op_ratio"]
    measured = [v for k, pair in ratios.items() if k not in ("T", "B") for v in pair if v is not None]
    heights = sorted(round(p.get_height(), 6) for p in fig.axes[0].patches)
    assert heights == sorted(round(v, 6) for v in measured)


def test_figures_without_their_data_say_so():
    bare = gpu_speed.SpeedReport({"device": "x", "date": "d"}, live=False)
    with pytest.raises(ValueError, match="no launch costs"):
        gpu_speed.launch_figure(bare)
    with pytest.raises(ValueError, match="no FLOP rates"):
        gpu_speed.rate_figure(bare)


BENCH = {  # the shape of `gpt2lab bench --device cuda --json`, numbers made up
    "ops": [{"op": "gelu", "shape": "B=4,T=64", "ratio": 1.5}, {"op": "gelu", "shape": "B=4,T=256", "ratio": 1.2},
            {"op": "adamw", "shape": "B=4,T=64", "ratio": 0.4}],
    "steps": [{"config": "tiny", "B": 4, "T": 64, "ours_ms": 10.0, "torch_ms": 5.0, "ours_gpu_mib": 900.0,
               "torch_peak_mib": 500.0, "launches_per_step": 300, "ours_host_ms": 4.0}],
    "matmul_ladder": [{"shape": "c_fc", "version": v, "ms": ms, "tflops": tf, "default": v == "v3", "N": 1}
                      for v, ms, tf in (("v1", 9.0, 1.0), ("v3", 3.0, 3.0), ("cublas", 1.0, 9.0))],
}


def test_a_bench_run_becomes_a_record_the_lesson_can_draw():
    record = gpu_speed.record_from_bench(BENCH, device="GPU X", date="2027-01-01", software="s", code="c")
    assert record["op_ratio"] == {"T": (64, 256), "B": 4, "gelu": (1.5, 1.2), "adamw": (0.4, None)}
    assert record["steps"][0]["ours_mib"] == 900.0 and record["steps"][0]["launches"] == 300
    report = gpu_speed.SpeedReport(record, live=False)
    table = gpu_speed.step_table(report).splitlines()
    assert table[0].split()[-3:] == ["launches", "host", "ms"] and table[1].split()[5:] == ["2.00", "900", "500", "300",
                                                                                          "4.0"]
    fig = gpu_speed.ladder_figure(report)
    assert sorted(p.get_height() for p in fig.axes[0].patches) == [1.0, 3.0, 9.0]
    assert any("v3 (the default then)" == t.get_text() for t in fig.axes[0].get_legend().get_texts())
    live = gpu_speed.ladder_figure(gpu_speed.SpeedReport(record, live=True))
    assert any("v3 (the default)" == t.get_text() for t in live.axes[0].get_legend().get_texts())
    gpu_speed.ops_figure(report)


FUSED = {"fused_ms": 8.0, "fused_gpu_mib": 700.0, "fused_launches_per_step": 120, "fused_host_ms": 2.0}


def test_a_record_keeps_the_fused_path_and_the_matmul_of_each_step():
    """What the next session picks defaults from: the fused path's figures and which matmul each row ran."""
    bench = dict(BENCH, matmul="cublas", steps=[dict(BENCH["steps"][0], **FUSED)])
    record = gpu_speed.record_from_bench(bench, device="GPU X", date="2027-01-01", software="s", code="c")
    row = record["steps"][0]
    assert {k: row[k] for k in ("fused_ms", "fused_mib", "fused_launches", "fused_host_ms", "matmul")} == \
        {"fused_ms": 8.0, "fused_mib": 700.0, "fused_launches": 120, "fused_host_ms": 2.0, "matmul": "cublas"}
    head, line = gpu_speed.step_table(gpu_speed.SpeedReport(record, live=False)).splitlines()
    assert head.split()[:5] == ["config", "B", "T", "matmul", "ours"] and "fused/torch" in head
    assert line.split()[:9] == ["tiny", "4", "64", "cublas", "10.0", "5.0", "2.00", "8.0", "1.60"]
    # a bench row without the fused path (an older bench) gives a record and a table without it
    old = gpu_speed.record_from_bench(BENCH, device="GPU X", date="2027-01-01", software="s", code="c")
    assert "fused_ms" not in old["steps"][0] and "matmul" not in old["steps"][0]
    assert "fused" not in gpu_speed.step_table(gpu_speed.SpeedReport(old, live=False))


def test_the_step_table_marks_what_a_row_lacks():
    record = {"steps": [{"config": "gpt2", "B": 4, "T": 1024, "ours_ms": 150.0, "torch_ms": 100.0, "matmul": "numba",
                         "fused_ms": 120.0},
                        {"config": "gpt2", "B": 4, "T": 1024, "ours_ms": 110.0, "torch_ms": 100.0,
                         "matmul": "cublas"}]}
    lines = gpu_speed.step_table(gpu_speed.SpeedReport(record, live=False)).splitlines()
    assert lines[1].split()[3:9] == ["numba", "150.0", "100.0", "1.50", "120.0", "1.20"]
    assert lines[2].split()[3:9] == ["cublas", "110.0", "100.0", "1.10", "-", "-"]


def _h100():
    """The first record (H100, 2026-11-26): before the speed work, without a ladder, profile or rates."""
    record = gpu_recorded.RECORDS[0]
    assert record["device"] == "one NVIDIA H100 (80 GB)"
    return gpu_speed.SpeedReport(record, live=False)


def test_no_ladder_recorded_says_how_to_record_one():
    with pytest.raises(ValueError, match="bench --device cuda --ladder"):
        gpu_speed.ladder_figure(_h100())


# ---- the per-kernel profile and the per-op rates (synthetic figures, the shapes `gpt2lab bench` writes)
def _profile(n_kernels=15):
    """A profile of Profile.as_dict's shape: kernel i takes i + 1 ms, once, plus 4 ms of idle gaps."""
    from gpt2lab.kernels.profile import IDLE
    ms = [float(i + 1) for i in range(n_kernels)][::-1]
    step = sum(ms) + 4.0
    rows = [{"kernel": f"kernel_{i:02d}_backward_dweight_v3", "calls": 2, "ms": m, "pct": 100 * m / step}
            for i, m in enumerate(ms)]
    rows.append({"kernel": IDLE, "calls": 0, "ms": 4.0, "pct": 100 * 4.0 / step})
    return {"clock": "cuda events (GPU time)", "launches": 2 * n_kernels, "step_ms": step, "rows": rows,
            "config": "gpt2", "B": 4, "T": 64, "wall_ms": step + 1}


PEAKS = {"name": "GPU X", "tflops_fp32": 50.0, "gbytes_s": 2000.0, "source": "NVIDIA data sheet (not measured)"}
RATED = dict(BENCH, peaks=PEAKS, profile=_profile(), ops=[
    {"op": "gelu", "shape": "B=4,T=64", "ratio": 1.5, "ours_ms": 1.0, "gbytes_s": 1000.0, "tflops": 0.5},
    {"op": "gelu", "shape": "B=4,T=256", "ratio": 1.2, "ours_ms": 2.0, "gbytes_s": 1500.0, "tflops": 1.0},
    {"op": "matmul", "shape": "B=4,T=256", "ratio": 2.0, "ours_ms": 3.0, "gbytes_s": 100.0, "tflops": 20.0}])


def _texts(fig):
    """The texts a reader sees: titles, axis labels, bar labels, legends, and the tick labels inside the axes'
    limits (matplotlib keeps ticks beyond them, undrawn)."""
    texts = [t for legend in fig.legends for t in legend.get_texts()]
    for ax in fig.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        texts += ax.get_legend().get_texts() if ax.get_legend() else []
        for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            lo, hi = min(lo, hi), max(lo, hi)
            texts += [t.label1 for t in axis.get_major_ticks() if lo - 1e-9 <= t.get_loc() <= hi + 1e-9]
    return [t for t in texts if t.get_visible() and t.get_text()]


def _readable(fig):
    """Text of at least 9 pt, no wider than the page, and no two texts overlapping."""
    from gpt2lab.explain.palette import FIGURE_MAX_WIDTH_IN, MIN_FONT_PT
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = _texts(fig)
    assert min(t.get_fontsize() for t in texts) >= MIN_FONT_PT
    assert fig.get_size_inches()[0] <= FIGURE_MAX_WIDTH_IN
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    page = fig.bbox
    for name, b in boxes:
        assert b.x0 >= page.x0 - 1 and b.x1 <= page.x1 + 1, f"{name!r} runs off the figure"
    clashes = [(a, b) for i, (a, ba) in enumerate(boxes) for b, bb in boxes[i + 1:] if ba.overlaps(bb)]
    assert not clashes, clashes


def test_a_bench_run_with_rates_and_a_profile_becomes_a_record():
    record = gpu_speed.record_from_bench(RATED, device="GPU X", date="2027-01-01", software="s", code="c")
    assert record["profile"] is RATED["profile"] and record["peaks"] == PEAKS
    assert record["peak_tflops_fp32"] == 50.0
    assert record["op_rates"][2] == {"op": "matmul", "B": 4, "T": 256, "ms": 3.0, "gbytes_s": 100.0, "tflops": 20.0}
    # an older bench JSON (no rates, no profile) gives a record without them
    old = gpu_speed.record_from_bench(BENCH, device="GPU X", date="d", software="s", code="c")
    assert not {"op_rates", "profile", "peaks"} & set(old)


def test_the_profile_figure_shows_the_top_kernels_other_and_idle():
    record = gpu_speed.record_from_bench(RATED, device="GPU X", date="2027-01-01", software="s", code="c")
    fig = gpu_speed.profile_figure(gpu_speed.SpeedReport(record, live=False), top=12)
    ax = fig.axes[0]
    widths = [p.get_width() for p in ax.patches]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    step = RATED["profile"]["step_ms"]
    # 12 kernels (15..4 ms), "other" = the 3 + 2 + 1 ms left, then the 4 ms idle: top to bottom
    assert len(widths) == 14 and labels[0].startswith("kernel_00_") and labels[0].endswith("(2 calls)")
    assert labels[-2] == "other (3 kernels, 6 calls)" and labels[-1] == "GPU idle between our kernels"
    assert widths[12] == pytest.approx(100 * 6 / step) and widths[13] == pytest.approx(100 * 4 / step)
    assert sum(widths) == pytest.approx(100.0)
    _readable(fig)


def test_the_op_rate_figure_puts_each_op_against_the_peaks():
    record = gpu_speed.record_from_bench(RATED, device="GPU X", date="2027-01-01", software="s", code="c")
    fig = gpu_speed.op_rate_figure(gpu_speed.SpeedReport(record, live=False))
    widths = sorted(round(p.get_width(), 6) for p in fig.axes[0].patches)
    # T = 256 (the longest): gelu 1500 of 2000 GB/s = 75%, 1 of 50 TFLOP/s = 2%; matmul 5% and 40%
    assert widths == [2.0, 5.0, 40.0, 75.0]
    _readable(fig)
    fig = gpu_speed.op_rate_figure(gpu_speed.SpeedReport(record, live=False), T=64)
    assert sorted(round(p.get_width(), 6) for p in fig.axes[0].patches) == [1.0, 50.0]
    with pytest.raises(ValueError, match="T=128 has no recorded rates"):
        gpu_speed.op_rate_figure(gpu_speed.SpeedReport(record, live=False), T=128)


def test_the_recorded_h100_has_no_profile_or_rates_and_the_figures_say_how_to_record_them():
    report = _h100()
    with pytest.raises(ValueError, match=r"^profile_figure: no per-kernel profile .*bench --device cuda --profile"):
        gpu_speed.profile_figure(report)
    with pytest.raises(ValueError, match=r"^op_rate_figure: no per-op rates .*bench --device cuda"):
        gpu_speed.op_rate_figure(report)
    unknown = dict(gpu_speed.record_from_bench(dict(RATED, peaks=None), device="GPU Y", date="d", software="s",
                                               code="c"))
    with pytest.raises(ValueError, match="no data-sheet peaks for GPU Y"):
        gpu_speed.op_rate_figure(gpu_speed.SpeedReport(unknown, live=False))


def test_the_command_line_joins_bench_files_into_one_record(tmp_path, capsys):
    import json
    (tmp_path / "a.json").write_text(json.dumps({"device": "cuda", "ops": BENCH["ops"], "steps": BENCH["steps"]}))
    (tmp_path / "b.json").write_text(json.dumps({"device": "cuda", "matmul_ladder": BENCH["matmul_ladder"],
                                                 "profile": _profile(), "peaks": PEAKS, "gpu": "GPU X"}))
    from gpt2lab.explain.gpu_speed_cli import main
    assert main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--device", "H100",
                           "--date", "2027-01-01"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["device"] == "H100" and len(record["matmul_ladder"]) == 3 and record["op_ratio"]["gelu"] == [1.5, 1.2]
    assert record["profile"] == _profile() and record["peaks"] == PEAKS


def test_the_command_line_tags_each_step_row_with_its_files_matmul(tmp_path, capsys):
    import json
    (tmp_path / "a.json").write_text(json.dumps({"device": "cuda", "matmul": "numba", "steps": BENCH["steps"]}))
    (tmp_path / "b.json").write_text(json.dumps({"device": "cuda", "matmul": "cublas", "steps": BENCH["steps"]}))
    (tmp_path / "old.json").write_text(json.dumps({"device": "cuda", "steps": BENCH["steps"]}))
    from gpt2lab.explain.gpu_speed_cli import main
    assert main([str(tmp_path / f) for f in ("a.json", "b.json", "old.json")] + ["--device", "H100"]) == 0
    steps = json.loads(capsys.readouterr().out)["steps"]
    assert [s.get("matmul") for s in steps] == ["numba", "cublas", None]


def test_a_bench_file_a_time_limit_cut_short_is_left_out_in_one_line(tmp_path, capsys):
    """tools/gpu_checks.sh's record step after a bench step was killed: the record of the others, exit 1."""
    import json
    (tmp_path / "a.json").write_text(json.dumps({"device": "cuda", "steps": BENCH["steps"]}))
    (tmp_path / "cut.json").write_text('{"device": "cuda", "ops": [')
    from gpt2lab.explain.gpu_speed_cli import main
    assert main([str(tmp_path / "a.json"), str(tmp_path / "cut.json"), str(tmp_path / "none.json"),
                 "--device", "H100"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["steps"][0]["ours_ms"] == 10.0 and "op_ratio" not in json.loads(out)
    assert err.splitlines()[0].startswith(f"gpu_speed_cli: left out {tmp_path / 'cut.json'}: not a bench --json")
    assert f"{tmp_path / 'none.json'}: not a bench --json output (FileNotFoundError" in err.splitlines()[1]


# ---- issue 14's goals, checked against a record
def _step(config, B, T, ours, torch, matmul="numba", mib=(100.0, 100.0), **more):
    return {"config": config, "B": B, "T": T, "ours_ms": ours, "torch_ms": torch, "matmul": matmul,
            "ours_mib": mib[0], "torch_mib": mib[1], **more}


def _verdicts(steps):
    return [(r["met"], r["value"]) for r in gpu_speed.goals({"steps": steps})]


def test_goals_are_met_by_a_record_within_every_one():
    steps = [_step("gpt2", 4, 1024, 150.0, 100.0, mib=(120.0, 100.0), fused_ms=90.0),
             _step("gpt2", 4, 1024, 110.0, 100.0, "cublas"), _step("tiny", 8, 64, 6.0, 6.0)]
    assert _verdicts(steps) == [("yes", 1.5), ("yes", 1.1), ("yes", 1.0), ("yes", 1.2)]
    rows = gpu_speed.goals({"steps": steps})
    assert rows[0]["measured"] == "1.50x (150.0 vs 100.0 ms); fused path 0.90x"


def test_a_candidate_is_shown_beside_the_goal_and_never_meets_it():
    """A step timed on candidates (--matmul v5 --flash v5) beside the default kernels: the goal is judged on the
    default kernels, the step `gpt2lab train` runs, and the candidate is shown, its flash on the fused path's
    figure (the one --flash changes); cuBLAS's row is never ours."""
    steps = [_step("gpt2", 4, 1024, 170.0, 100.0),
             _step("gpt2", 4, 1024, 140.0, 100.0, "v5", flash="v5", fused_ms=95.0),
             _step("gpt2", 4, 1024, 100.0, 100.0, "cublas"), _step("tiny", 8, 64, 6.0, 6.0)]
    rows = gpu_speed.goals({"steps": steps})
    assert (rows[0]["met"], rows[0]["value"]) == ("no", 1.7)
    assert rows[0]["measured"] == ("1.70x (170.0 vs 100.0 ms); other versions of ours (not the defaults): "
                                   "--matmul v5 1.40x, fused path (flash v5) 0.95x")
    alone = gpu_speed.goals({"steps": steps[1:]})[0]   # the candidate alone does not meet the goal
    assert (alone["met"], alone["value"]) == ("unknown", None)
    assert alone["measured"].startswith("not measured; other versions of ours (not the defaults): --matmul v5 1.40x")
    assert _verdicts(steps[2:])[0] == ("unknown", None)   # cuBLAS's step is not ours


def test_each_goal_fails_on_its_own():
    base = [_step("gpt2", 4, 1024, 150.0, 100.0), _step("gpt2", 4, 1024, 110.0, 100.0, "cublas"),
            _step("tiny", 8, 64, 6.0, 6.0)]
    for i, (config, matmul) in enumerate((("gpt2", "numba"), ("gpt2", "cublas"), ("tiny", "numba"))):
        steps = [dict(s, ours_ms=s["ours_ms"] * 1.05) if (s["config"], s["matmul"]) == (config, matmul) else s
                 for s in base]
        assert [m for m, _ in _verdicts(steps)] == ["yes"] * i + ["no"] + ["yes"] * (3 - i), (config, matmul)
    # the fused path under the goal does not meet it: the trainer's step is the default path
    assert _verdicts([dict(base[0], ours_ms=160.0, fused_ms=100.0)])[0][0] == "no"
    fat = [dict(base[1], ours_mib=121.0)] + base[::2]
    assert _verdicts(fat)[3] == ("no", 1.21)
    assert "worst 1.21x (gpt2 B=4, T=1024, cublas: 121 vs 100 MiB)" in gpu_speed.goals({"steps": fat})[3]["measured"]


def test_a_row_whose_default_is_the_fused_path_is_judged_on_it():
    """Since the fused path became `gpt2lab train`'s default on a GPU, bench marks each row's default path; the
    goal and the memory goal read that path's figures, the other path is shown beside them."""
    fused = _step("gpt2", 4, 1024, 900.0, 100.0, mib=(130.0, 100.0), fused_ms=140.0, fused_mib=110.0,
                  default_path="fused")
    rows = gpu_speed.goals({"steps": [fused]})
    assert (rows[0]["met"], rows[0]["value"]) == ("yes", 1.4)
    assert rows[0]["measured"] == "1.40x (140.0 vs 100.0 ms); per-op path 9.00x"
    assert (rows[3]["met"], rows[3]["value"]) == ("yes", 1.1)
    # the same row without the mark (an older record): judged on the per-op path, the default then
    old = dict(fused)
    del old["default_path"]
    assert _verdicts([old])[0] == ("no", 9.0) and _verdicts([old])[3] == ("no", 1.3)
    record = gpu_speed.record_from_bench({"steps": [dict(fused, ours_gpu_mib=130.0, fused_gpu_mib=110.0)]},
                                         "H200", "2027-01-01", "sw", "abc")
    assert record["steps"][0]["default_path"] == "fused"
    head, row = gpu_speed.step_table(gpu_speed.SpeedReport(record, live=False)).splitlines()
    at = head.index(" default") + 1   # the column's text sits under its head, right-aligned to it
    assert row[at:at + len("default")].strip() == "fused"


def test_a_goal_the_record_lacks_is_unknown_and_says_what_was_measured():
    steps = [_step("tiny", 4, 64, 12.0, 6.0), _step("gpt2", 4, 1024, 150.0, 100.0, mib=(100.0, None))]
    rows = gpu_speed.goals({"steps": steps})
    assert [r["met"] for r in rows] == ["yes", "unknown", "unknown", "unknown"]
    assert rows[1]["measured"] == "not measured" and rows[1]["value"] is None
    # tiny at B=4 is not a measure of the goal at B=8: named, not taken
    assert rows[2]["measured"] == "not measured (measured only at tiny B=4, T=64, numba: 2.00x)"
    assert rows[3]["measured"] == "worst 1.00x (tiny B=4, T=64, numba: 100 vs 100 MiB); not measured at gpt2 " \
                                  "B=4, T=1024, numba"
    # a row over the memory goal is "no" even where another lacks its memory
    assert gpu_speed.goals({"steps": [dict(steps[0], ours_mib=200.0), steps[1]]})[3]["met"] == "no"
    assert [r["met"] for r in gpu_speed.goals({"steps": []})] == ["unknown"] * 4


def test_the_recorded_h100_fails_the_goals_it_measured():
    """The record of 2026-11-26: before any speed work, and no cuBLAS step (a row without "matmul" ran ours)."""
    rows = gpu_speed.goals(gpu_recorded.RECORDS[0])
    assert [r["met"] for r in rows] == ["no", "unknown", "no", "no"]
    assert rows[0]["value"] == pytest.approx(1717 / 108) and rows[2]["value"] == pytest.approx(38.4 / 6.3)
    table = gpu_speed.goals_table(gpu_recorded.RECORDS[0]).splitlines()
    assert table[0] == "issue 14's goals on one NVIDIA H100 (80 GB), 2026-11-26:" and len(table) == 6


def test_the_command_line_writes_the_goals_beside_the_record(tmp_path, capsys):
    import json
    (tmp_path / "a.json").write_text(json.dumps({"device": "cuda", "matmul": "cublas", "steps": [
        {"config": "gpt2", "B": 4, "T": 1024, "ours_ms": 105.0, "torch_ms": 100.0}]}))
    from gpt2lab.explain.gpu_speed_cli import main
    assert main([str(tmp_path / "a.json"), "--device", "H100", "--date", "2027-01-01",
                 "--goals", str(tmp_path / "goals.txt")]) == 0
    lines = (tmp_path / "goals.txt").read_text().splitlines()
    assert lines[0] == "issue 14's goals on H100, 2027-01-01:"
    assert lines[3].split()[-6:] == ["yes", "1.05x", "(105.0", "vs", "100.0", "ms)"]


def _record(code: str) -> dict:
    (record,) = [r for r in gpu_recorded.RECORDS if r["code"] == code]
    return record


def _draws_every_figure(record: dict) -> str:
    """Every figure of lesson 6 draws from `record`; returns the top bar's label of the fused path's profile
    (the kernel that took the most of that step)."""
    from matplotlib import pyplot as plt
    report = gpu_speed.SpeedReport(record, live=False)
    for figure in (gpu_speed.ops_figure, gpu_speed.ladder_figure, gpu_speed.profile_figure, gpu_speed.op_rate_figure):
        plt.close(figure(report))
    fused = gpu_speed.profile_figure(report, fused=True)
    plt.close(fused)
    assert "(gpt2, B=8, T=64, fused path)\nrecorded: NVIDIA H200" in fused.axes[0].get_title()
    return fused.axes[0].get_yticklabels()[0].get_text()


def test_the_recorded_h200_draws_every_figure_and_its_goals_are_those_of_its_day():
    """The H200 record of 2026-11-26 (code 1305ec5, per-op path and matmul v3 the defaults then): every figure of
    lesson 6 draws from it, and the goals read as they did that day, the candidates beside them."""
    record = _record("1305ec5")
    assert record["device"] == "NVIDIA H200" and record["date"] == "2026-11-26"
    assert "attention_backward_flash_dq_kernel" in _draws_every_figure(record)
    rows = gpu_speed.goals(record)
    assert [r["met"] for r in rows] == ["no", "yes", "no", "yes"]
    assert rows[0]["measured"].startswith("16.60x (1720.7 vs 103.7 ms); fused path 13.07x; other versions of ours "
                                          "(not the defaults): --matmul v5 14.71x, fused path (flash v5) 2.59x")


def test_the_newest_record_is_the_h200_of_2026_11_27_with_matmul_v8_beside_the_goal():
    """The record lesson 6 shows (code fe91a4e, matmul v7 the default then): the 124M step missed 1.5x on v7
    (1.61x) and was under it on the candidate v8 (1.40x; the default since), cuBLAS's and tiny's goals met, and
    its ladder has v8 beside v7."""
    record = gpu_recorded.latest()
    assert (record["device"], record["date"], record["code"]) == ("NVIDIA H200", "2026-11-27", "fe91a4e")
    assert "matmul_forward_kernel_v7" in _draws_every_figure(record)
    rows = gpu_speed.goals(record)
    assert [r["met"] for r in rows] == ["no", "yes", "yes", "yes"]
    assert rows[0]["measured"].startswith("1.61x (168.6 vs 104.7 ms); per-op path 13.30x; other versions of ours "
                                          "(not the defaults): --matmul v8 1.40x")
    assert {r["version"] for r in record["matmul_ladder"]} >= {"v7", "v8", "cublas"}
