"""`gpt2lab verify --shape`: one op checked at a shape of your choosing (e.g. a small one with every path of a
kernel, for compute-sanitizer on a GPU). A wrong shape is one line and exit 2 before any GPU is looked for."""
import json

import pytest

from gpt2lab.kernels import verify_cli


def one_line(capsys, code, needle):
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and needle in lines[0], err


def test_the_shape_is_the_one_checked(capsys):
    shape = {"B": 1, "T": 3, "C": 5, "OC": 7}
    assert verify_cli.main(["--op", "matmul", "--version", "blas", "--shape", json.dumps(shape), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["shape"] for r in rows} == {"B=1,T=3,C=5,OC=7"} and all(r["ok"] for r in rows)
    assert {r["tensor"] for r in rows} == {"out", "dinp", "dweight", "dbias"}


@pytest.mark.parametrize("argv, needle", [
    (["--op", "matmul", "--shape", '{"B": 1}'], "matmul needs B, C, OC, T (missing C, OC, T)"),
    (["--op", "matmul", "--shape", '{"B": 1, "T": 2, "C": 3, "OC": 4, "H": 2}'], "(unknown H)"),
    (["--op", "matmul", "--shape", '{"B": 1, "T": 2, "C": 3, "OC": 0}'], "OC must be a positive integer"),
    (["--op", "matmul", "--shape", '{"B": 1, "T": 2.5, "C": 3, "OC": 4}'], "T must be a positive integer"),
    (["--op", "matmul", "--shape", "B=1"], "is not JSON"),
    (["--op", "matmul", "--shape", "[1, 2]"], "expected a JSON object of sizes"),
    (["--shape", '{"B": 1, "T": 2, "C": 3, "OC": 4}'], "name exactly one --op with --shape"),
    (["--device", "cuda", "--op", "matmul", "--shape", '{"B": 1}'], "(missing C, OC, T)"),   # before the GPU
])
def test_a_wrong_shape_is_one_line(argv, needle, capsys):
    one_line(capsys, verify_cli.main(argv), needle)
