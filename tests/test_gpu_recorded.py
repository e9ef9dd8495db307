"""The GPU records (explain/gpu_records/*.json): every file has what lesson 6 draws, a record missing a section
fails in one line naming the file, and the installed package carries the same files as the checkout."""
import copy
import json
import pathlib

import pytest

from gpt2lab.explain import gpu_recorded, gpu_speed

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCE = ROOT / "explain" / "gpu_records"


def test_every_record_file_has_what_lesson_6_draws():
    files = sorted(SOURCE.glob("*.json"))
    assert files, SOURCE
    for path in files:
        gpu_recorded.check_record(json.loads(path.read_text()), path.name)


def test_the_installed_package_carries_every_record_file():
    """The strict editable install links each data file: one added after `make setup` is missing until it runs."""
    from importlib import resources
    installed = resources.files("gpt2lab.explain").joinpath(gpu_recorded.FOLDER)
    assert sorted(p.name for p in installed.iterdir() if p.name.endswith(".json")) == \
        sorted(p.name for p in SOURCE.glob("*.json")), "a record file is not installed: run make setup"
    assert len(gpu_recorded.RECORDS) == len(list(SOURCE.glob("*.json")))


def _h100():
    return json.loads((SOURCE / "h100_2026-11-26.json").read_text())


@pytest.mark.parametrize("key", list(gpu_recorded.REQUIRED))
def test_a_record_missing_a_required_section_fails(key):
    record = _h100()
    del record[key]
    with pytest.raises(ValueError, match=rf"^h100\.json: no '{key}' \(every record needs device, date"):
        gpu_recorded.check_record(record, "h100.json")


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(date="26/11/2026"), "date: expected a date YYYY-MM-DD, got '26/11/2026'"),
    (lambda r: r["steps"][0].pop("torch_ms"), r"steps\[0\]: no 'torch_ms'"),
    (lambda r: r["steps"][1].update(T="256"), r"steps\[1\]\.T: expected an integer, got '256'"),
    (lambda r: r.update(steps=[]), "steps: expected a non-empty list"),
    (lambda r: r["op_ratio"].update(gelu=[1.6]), r"op_ratio\.gelu: expected one ratio \(or null\) per T \[64, 256\]"),
    (lambda r: r["launch_us"].update(torch="fast"), "launch_us.torch: expected a number, got 'fast'"),
    (lambda r: r.pop("peak_tflops_fp32"), "'tflops' without 'peak_tflops_fp32'"),
])
def test_a_section_of_the_wrong_shape_fails(change, message):
    record = _h100()
    change(record)
    with pytest.raises(ValueError, match=message):
        gpu_recorded.check_record(record, "h100.json")


def _newer(date="2027-01-01"):
    """A record of the shape tools/gpu_checks.sh's record step writes (numbers made up), through JSON."""
    from test_explain_gpu_speed import RATED
    record = gpu_speed.record_from_bench(dict(RATED, profile_fused=RATED["profile"]), device="NVIDIA H100",
                                         date=date, software="s", code="c")
    return json.loads(json.dumps(record))


def test_the_newer_sections_are_checked_when_present():
    record = _newer()
    assert {"profile", "profile_fused", "op_rates", "peaks", "matmul_ladder"} <= set(record)
    gpu_recorded.check_record(record, "new.json")
    for key, change, message in (
            ("profile", lambda p: p["rows"][0].pop("pct"), r"profile\.rows\[0\]: no 'pct'"),
            ("profile_fused", lambda p: p.update(launches=2.5), "profile_fused.launches: expected an integer"),
            ("op_rates", lambda rows: rows[0].update(gbytes_s=None), r"op_rates\[0\]\.gbytes_s: expected a number"),
            ("peaks", lambda p: p.pop("gbytes_s"), "peaks: no 'gbytes_s'"),
            ("matmul_ladder", lambda rows: rows[0].update(default="yes"), "default: expected true or false")):
        broken = copy.deepcopy(record)
        change(broken[key])
        with pytest.raises(ValueError, match=message):
            gpu_recorded.check_record(broken, "new.json")


def test_the_step_rows_fused_path_and_matmul_are_checked_when_present():
    from test_explain_gpu_speed import FUSED
    record = _newer()
    record["steps"][0].update(fused_ms=8.0, fused_mib=700.0, fused_launches=120, fused_host_ms=2.0, matmul="cublas")
    gpu_recorded.check_record(record, "new.json")
    gpu_recorded.check_record(dict(record, steps=[dict(record["steps"][0], matmul="v5", flash="v5",
                                                       default_path="fused")]), "new.json")
    for field, value, message in (("fused_ms", None, "fused_ms: expected a number, got None"),
                                  ("fused_launches", 1.5, "fused_launches: expected an integer or null"),
                                  ("fused_host_ms", "2", "fused_host_ms: expected a number or null"),
                                  ("matmul", "cuBLAS", "matmul: expected one of numba, v1, v2, v3, v4, v5, v6, v7, v8, "
                                                       "cublas, got 'cuBLAS'"),
                                  ("flash", "v9", "flash: expected one of v4, v5, v6, got 'v9'"),
                                  ("default_path", "fast", "default_path: expected one of fused, per-op, got 'fast'"),
                                  ("launches", "300", "launches: expected an integer or null")):
        broken = copy.deepcopy(record)
        broken["steps"][0][field] = value
        with pytest.raises(ValueError, match=rf"^new\.json: steps\[0\]\.{message}"):
            gpu_recorded.check_record(broken, "new.json")
    # a record from the script's faked bench output keeps them, through JSON
    row = dict(gpu_speed.record_from_bench({"steps": [dict(_newer_step(), **FUSED)], "matmul": "numba"},
                                           device="x", date="2027-01-01", software="s", code="c")["steps"][0])
    assert row["fused_launches"] == FUSED["fused_launches_per_step"] and row["matmul"] == "numba"


def _newer_step():
    from test_explain_gpu_speed import BENCH
    return copy.deepcopy(BENCH["steps"][0])


def test_records_load_checked_and_the_newest_is_latest(tmp_path):
    (tmp_path / "b_2026-11-26.json").write_text(json.dumps(_h100()))
    (tmp_path / "a_2027-01-01.json").write_text(json.dumps(_newer("2027-01-01")))
    (tmp_path / "README.md").write_text("not a record")
    records = gpu_recorded.load_records(tmp_path)
    assert [r["date"] for r in records] == ["2026-11-26", "2027-01-01"]
    assert gpu_recorded.latest() is gpu_recorded.RECORDS[-1]
    assert gpu_recorded.latest()["date"] == max(r["date"] for r in gpu_recorded.RECORDS)
    bad = _h100()
    del bad["steps"]
    (tmp_path / "c_2027-02-02.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"^gpu_records/c_2027-02-02\.json: no 'steps'"):
        gpu_recorded.load_records(tmp_path)
    (tmp_path / "c_2027-02-02.json").write_text('{"device": ')
    with pytest.raises(ValueError, match=r"^gpu_records/c_2027-02-02\.json: not JSON"):
        gpu_recorded.load_records(tmp_path)
    with pytest.raises(ValueError, match="no such folder; the package was installed without its GPU records"):
        gpu_recorded.load_records(tmp_path / "none")


def test_lesson_6_draws_a_newer_record_without_launch_costs_or_flop_rates():
    """A record from the script has neither (they were measured apart, once): the lesson's cells for them
    print what is missing, and every figure of what the record has draws."""
    report = gpu_speed.SpeedReport(_newer(), live=False)
    assert "launch_us" not in report.record and "tflops" not in report.record
    gpu_speed.step_table(report)
    for draw in (gpu_speed.ops_figure, gpu_speed.ladder_figure, gpu_speed.profile_figure, gpu_speed.op_rate_figure):
        draw(report)
    lesson = (ROOT / "notebooks" / "06_mlp.py").read_text()
    for figure, section in (("launch_figure", "launch_us"), ("rate_figure", "tflops"),
                            ("ladder_figure", "matmul_ladder"), ("profile_figure", "profile")):
        assert f'if "{section}" in report.record' in lesson.split(f"GS.{figure}(report)")[0].rsplit("# %%", 1)[1]


def test_make_setup_runs_again_when_a_record_is_added(tmp_path):
    """The Makefile's install stamp lists the record files with the modules: a new record changes the list, so
    `make setup` links it into the strict editable install."""
    from test_packaging import _setup
    venv = tmp_path / "venv"
    assert "editable_mode=strict" in _setup(venv)
    listed = (venv / ".modules").read_text().split()
    assert {f"explain/gpu_records/{p.name}" for p in SOURCE.glob("*.json")} <= set(listed)
    assert "install" not in _setup(venv)
    records = " ".join(p for p in listed if p.startswith("explain/gpu_records/"))
    assert "editable_mode=strict" in _setup(venv, f"MODULE_FILES={records} explain/gpu_records/x_2027-01-01.json")
