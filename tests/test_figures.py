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
