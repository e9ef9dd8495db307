"""A command's failure is one line on stderr, exit 2, no traceback: the check the CLI tests share."""


def one_line_error(capsys, code, *needles):
    """Assert exit code 2 and one stderr line (no traceback) that contains every needle."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
