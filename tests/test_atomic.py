import pytest

from gpt2lab.atomic import atomic_write


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "sub" / "f.bin"
    atomic_write(p, lambda f: f.write(b"old"))
    atomic_write(p, lambda f: f.write(b"new"))
    assert p.read_bytes() == b"new"
    assert [x.name for x in p.parent.iterdir()] == ["f.bin"]


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    p = tmp_path / "f.bin"
    atomic_write(p, lambda f: f.write(b"old"))

    def half_then_interrupt(f):
        f.write(b"ha")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        atomic_write(p, half_then_interrupt)
    assert p.read_bytes() == b"old"
    assert [x.name for x in tmp_path.iterdir()] == ["f.bin"]
