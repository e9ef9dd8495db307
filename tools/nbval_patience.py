"""A pytest plugin for `make test-notebooks` (`-p tools.nbval_patience`): more patience for a cell's output.

After a cell has finished, nbval reads its output messages with a fixed 5 s wait for each. On a busy 2-core
machine a cell that printed a lot (the tour's first cell that trains the course model, 500 progress-bar
updates) can take longer than that to deliver them, and nbval then fails a cell that ran fine ("Timeout of 5
seconds exceeded waiting for output"; seen once in a fresh-clone CI run). A cell that really hangs is still
caught by nbval's own cell timeout.
"""
OUTPUT_TIMEOUT = 60  # seconds nbval waits for each output message of a finished cell


def pytest_collection_modifyitems(items):
    for item in items:
        if hasattr(item, "output_timeout"):   # nbval's IPyNbCell
            item.output_timeout = OUTPUT_TIMEOUT
