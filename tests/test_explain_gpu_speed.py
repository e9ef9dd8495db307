"""Lesson 6's GPU section: recorded figures are labelled as recorded, and the pictures are computed from them."""
import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from gpt2lab.explain import gpu_recorded, gpu_speed  # noqa: E402


def test_without_a_gpu_the_report_is_a_record_and_says_so():
    report = gpu_speed.speed_report()
    assert not report.live and report.record is gpu_recorded.latest()
    line = report.source()
    assert "recorded on one NVIDIA H100" in line and "2026-11-26" in line and "nothing here was measured now" in line
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
    assert row[:7] == ["tiny", "8", "64", "30.0", "6.0", "5.0", "-"]
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
    assert table[0].split()[-3:] == ["launches", "host", "ms"] and table[1].split()[5:] == ["2.0", "900", "500", "300",
                                                                                          "4.0"]
    fig = gpu_speed.ladder_figure(report)
    assert sorted(p.get_height() for p in fig.axes[0].patches) == [1.0, 3.0, 9.0]
    assert any("v3 (the model's)" == t.get_text() for t in fig.axes[0].get_legend().get_texts())
    gpu_speed.ops_figure(report)


def test_no_ladder_recorded_says_how_to_record_one():
    with pytest.raises(ValueError, match="bench --device cuda --ladder"):
        gpu_speed.ladder_figure(gpu_speed.speed_report(measure=False))


def test_the_command_line_joins_bench_files_into_one_record(tmp_path, capsys):
    import json
    (tmp_path / "a.json").write_text(json.dumps({"device": "cuda", "ops": BENCH["ops"], "steps": BENCH["steps"]}))
    (tmp_path / "b.json").write_text(json.dumps({"device": "cuda", "matmul_ladder": BENCH["matmul_ladder"]}))
    from gpt2lab.explain.gpu_speed_cli import main
    assert main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--device", "H100",
                           "--date", "2027-01-01"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["device"] == "H100" and len(record["matmul_ladder"]) == 3 and record["op_ratio"]["gelu"] == [1.5, 1.2]
