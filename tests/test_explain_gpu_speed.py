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
