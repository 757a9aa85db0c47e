"""Checks on the notebooks that `make test` runs through nbval (`--nbval-lax`), on the outputs of that run.

nbval only fails a cell that raises; a figure printed as `<Figure size ...>` text instead of an image, or a
warning block in the setup cell, would pass. After each cell, `sdlab.figures.display_problems` reads the
outputs nbval collected (the same check `sdlab figures` applies to papermill's executed copies), and the cell
fails if it saves a figure it does not show as an image, shows a figure as text, or (the first code cell)
writes on stderr. The notebooks are not run a second time for this.
"""

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    outputs = getattr(item, "test_outputs", None)
    if type(item).__name__ == "IPyNbCell" and outputs is not None:
        from sdlab.figures import display_problems

        first = item.cell is next(cell for cell in item.parent.nb.cells if cell.cell_type == "code")
        problems = display_problems(item.cell.source, outputs, setup_cell=first)
        if problems:
            item.raise_cell_error("; ".join(problems))
    return result
