"""`sdlab figures`: runs numbered notebooks with papermill and indexes the PNGs each one saved."""

import nbformat
import pytest

from sdlab.figures import find_notebooks, main


def _notebook(path, body):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('FIGURES = "../figures"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


SAVE_PNG = """
from pathlib import Path
from PIL import Image
Image.new("RGB", (4, 4)).save(Path(FIGURES) / "{name}")
"""


def test_runs_notebooks_and_indexes_their_figures(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _notebook(nbs / "00_a.ipynb", SAVE_PNG.format(name="00_first.png"))
    _notebook(nbs / "01_b.ipynb", SAVE_PNG.format(name="01_second.png"))
    _notebook(nbs / "scratch.ipynb", "raise SystemExit('unnumbered notebooks are not run')")
    figures, build = tmp_path / "figures", tmp_path / "build"
    (figures).mkdir()
    (figures / "99_stale.png").write_bytes(b"")

    assert main(["--notebooks", str(nbs), "--figures", str(figures), "--build", str(build)]) == 0
    assert sorted(p.name for p in build.iterdir()) == ["00_a.ipynb", "01_b.ipynb"]
    index = (figures / "index.md").read_text()
    assert index.index("## 00_a.ipynb") < index.index("00_first.png") < index.index("## 01_b.ipynb")
    assert index.index("## 01_b.ipynb") < index.index("01_second.png")
    assert "stale" in index and "99_stale.png" in index


def test_a_failing_notebook_fails_the_command(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _notebook(nbs / "00_bad.ipynb", "1 / 0")
    figures = tmp_path / "figures"
    assert main(["--notebooks", str(nbs), "--figures", str(figures), "--build", str(tmp_path / "b")]) == 1
    assert "failed in the last run" in (figures / "index.md").read_text()


def test_missing_notebooks_folder_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="no notebooks folder"):
        find_notebooks(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no numbered notebooks"):
        find_notebooks(tmp_path / "empty")


SETUP = """
import sdlab
from sdlab import attention, p2p, viz
from sdlab.finetune import FinetuneConfig, finetune, plots
from sdlab.toymodel.tokenizer import warn_unknown_words
"""

SHOWN = """
fig = viz.image_row([np.zeros((8, 8, 3))] * 2, ["a", "b"])
fig.savefig(Path(FIGURES) / "00_shown.png")
fig
"""

AS_TEXT = """
from matplotlib.figure import Figure
fig = Figure()
fig.subplots().plot([0, 1])
fig.savefig(Path(FIGURES) / "00_as_text.png")
fig
"""


def test_figures_reports_a_figure_shown_as_text_and_stderr_in_the_setup_cell(tmp_path, capsys):
    """In a real kernel (no pyplot imported): an sdlab figure at the end of a cell is an image, a bare
    matplotlib Figure is `<Figure size ...>` text and fails the run; importing sdlab writes nothing on stderr,
    while sdlab's own warnings still do."""
    nbs, figures, build = tmp_path / "notebooks", tmp_path / "figures", tmp_path / "build"
    nbs.mkdir()
    _notebook(nbs / "00_display.ipynb", "from pathlib import Path\nimport numpy as np\n" + SHOWN)
    nb = nbformat.read(nbs / "00_display.ipynb", as_version=4)
    nb.cells.insert(1, nbformat.v4.new_code_cell(SETUP))
    nb.cells += [nbformat.v4.new_code_cell(AS_TEXT), nbformat.v4.new_code_cell('warn_unknown_words("a zebra")')]
    nbformat.write(nb, nbs / "00_display.ipynb")

    assert main(["--notebooks", str(nbs), "--figures", str(figures), "--build", str(build)]) == 1
    executed = nbformat.read(build / "00_display.ipynb", as_version=4).cells
    setup, shown, as_text, warned = (next(c for c in executed if key in c.source)
                                     for key in ("import sdlab", "viz.image_row", "Figure()", "zebra"))
    assert not any(o.get("name") == "stderr" for o in setup.outputs), setup.outputs
    assert any("image/png" in o.get("data", {}) for o in shown.outputs)
    assert "does not know 'zebra'" in "".join(o.get("text", "") for o in warned.outputs)
    err = capsys.readouterr().err
    problems = [line.strip() for line in err.splitlines() if line.strip().startswith("00_display.ipynb cell")]
    cell = f"cell {executed.index(as_text)}:"
    assert len(problems) == 2 and all(cell in p for p in problems), err  # not shown, and shown as text
    assert "<Figure size" in problems[1]
