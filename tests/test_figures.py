"""`sdlab figures`: runs numbered notebooks with papermill and indexes the PNGs each one saved."""

import nbformat
import pytest

from sdlab.figures import find_notebooks, main
from sdlab.notebook_parameters import (assign_parameters, declared_parameters, parse_parameters, parse_value,
                                       run_slug)


def _notebook(path, body, parameters=""):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(parameters + 'FIGURES = "../figures"')
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


def test_only_keeps_the_other_notebooks_figures_in_their_indexed_order(tmp_path):
    nbs, figures, build = tmp_path / "notebooks", tmp_path / "figures", tmp_path / "build"
    nbs.mkdir()
    _notebook(nbs / "00_a.ipynb", SAVE_PNG.format(name="00_zebra.png") + SAVE_PNG.format(name="00_apple.png"))
    _notebook(nbs / "01_b.ipynb", SAVE_PNG.format(name="01_second.png"))
    args = ["--notebooks", str(nbs), "--figures", str(figures), "--build", str(build)]
    assert main(args) == 0
    full = (figures / "index.md").read_text()
    assert full.index("00_zebra.png") < full.index("00_apple.png")  # the order the notebook saved them
    (figures / "00_new.png").write_bytes(b"")  # a figure the old index does not list goes after the listed ones
    assert main(args + ["--only", "01"]) == 0
    index = (figures / "index.md").read_text()
    assert index.index("00_zebra.png") < index.index("00_apple.png") < index.index("00_new.png")
    assert index.replace("### 00_new.png\n\n![00_new.png](00_new.png)\n\n", "") == full


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


# -- batch reruns with parameters: sdlab figures -p NAME VALUE ------------------------------------------------

RECORD = """
from pathlib import Path
Path(FIGURES, "{name}").write_text(repr({names}))
from PIL import Image
Image.new("RGB", (4, 4)).save(Path(FIGURES) / "{name}.png")
"""


def test_parameters_go_to_the_notebooks_that_declare_them_in_a_folder_of_their_own(tmp_path, monkeypatch):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _notebook(nbs / "00_a.ipynb", RECORD.format(name="00_a", names="(STEPS, GUIDANCE)"),
              "STEPS = 25  # DDIM steps\nGUIDANCE = 7.5\n")
    _notebook(nbs / "01_b.ipynb", RECORD.format(name="01_b", names="(MODEL, STEPS, WORDS)"),
              'MODEL = "toy"\nSTEPS: int = 50\nWORDS = ["a", "b"]\n')
    committed = tmp_path / "figures"
    committed.mkdir()
    (committed / "index.md").write_text("the committed index")
    (tmp_path / "my model").mkdir()
    monkeypatch.chdir(tmp_path)

    assert main(["--notebooks", "notebooks", "-p", "STEPS", "10", "-p", "MODEL", "my model", "-p", "GUIDANCE", "None"]) == 0
    out = tmp_path / "build" / "figures-steps-10_model-my-model_guidance-None"
    # each notebook got the parameters it declares, parsed like papermill's -p; the others kept their defaults
    assert (out / "00_a").read_text() == "(10, None)"
    assert (out / "01_b").read_text() == repr((str(tmp_path / "my model"), 10, ["a", "b"]))
    assert sorted(p.name for p in (tmp_path / "build" / "notebooks-steps-10_model-my-model_guidance-None").iterdir()) == [
        "00_a.ipynb", "01_b.ipynb"]
    index = (out / "index.md").read_text()
    assert "-p STEPS 10" in index and "`GUIDANCE = None`" in index and "00_a.png" in index and "01_b.png" in index
    assert (committed / "index.md").read_text() == "the committed index" and not list(committed.glob("*.png"))


def test_output_figures_writes_the_committed_folder_when_asked(tmp_path, monkeypatch):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _notebook(nbs / "00_a.ipynb", RECORD.format(name="00_a", names="STEPS"), "STEPS = 25\n")
    monkeypatch.chdir(tmp_path)
    assert main(["--notebooks", "notebooks", "-p", "STEPS", "3", "--output", "figures"]) == 0
    assert (tmp_path / "figures" / "00_a").read_text() == "3"
    assert "-p STEPS 3" in (tmp_path / "figures" / "index.md").read_text()


def test_an_undeclared_parameter_is_an_error_before_anything_runs(tmp_path, monkeypatch, capsys):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _notebook(nbs / "00_a.ipynb", "raise SystemExit('must not run')", "STEPS = 25\nSEED = 0\n")
    _notebook(nbs / "01_b.ipynb", "raise SystemExit('must not run')")
    monkeypatch.chdir(tmp_path)
    assert main(["--notebooks", "notebooks", "-p", "STPES", "50"]) == 2
    err = capsys.readouterr().err
    assert "declares STPES (did you mean STEPS?)" in err
    assert "00_a.ipynb: STEPS, SEED" in err and "01_b.ipynb: (none)" in err  # each notebook's parameters
    assert not (tmp_path / "build").exists()
    assert main(["--notebooks", "notebooks", "-p", "FIGURES", "elsewhere"]) == 2
    assert "--output" in capsys.readouterr().err
    assert main(["--notebooks", "notebooks", "-p", "STEPS", "1", "-p", "STEPS", "2"]) == 2
    assert "STEPS is given twice (1 and 2)" in capsys.readouterr().err
    # --only narrows what counts as declared: SEED is 00's, so a run of 01 alone rejects it
    assert main(["--notebooks", "notebooks", "--only", "01", "-p", "SEED", "1"]) == 2
    assert "01_b.ipynb: (none)" in capsys.readouterr().err


def test_parameter_values_are_read_as_papermill_reads_them(tmp_path):
    assert [parse_value(v) for v in ("10", "-3", "0.5", "2e-4", "None", "True", "False", "a/b", "7.5x", "")] == [
        10, -3, 0.5, 2e-4, None, True, False, "a/b", "7.5x", ""]
    assert parse_parameters([("STEPS", "50"), ("MODEL", "x/y")]) == {"STEPS": 50, "MODEL": "x/y"}
    with pytest.raises(ValueError, match="not a parameter name"):
        parse_parameters([("my-steps", "5")])
    nb = tmp_path / "00_a.ipynb"
    _notebook(nb, "", "%matplotlib inline\nimport os\nSTEPS = 25  # a comment\nLIST = [1,\n        2]\n")
    assert declared_parameters(nb) == {"STEPS": "25", "LIST": "[1,\n        2]", "FIGURES": '"../figures"'}
    assert assign_parameters([nb], {"LIST": [3]}) == {nb: {"LIST": [3]}}
    assert run_slug({"STEPS": 10, "MODEL": "/a/b c"}) == "steps-10_model-a-b-c"
    long = run_slug({"PROMPT": "a watercolor painting of a red cat on grass under the moon at night"})
    assert len(long) <= 60 and long != run_slug({"PROMPT": "a watercolor painting of a red cat on grass under the moon"})


LANE = """
import json, os, time
from pathlib import Path
start = time.time()
Path(FIGURES, "{name}.started").write_text("")
for name in {needs}:
    assert (Path(FIGURES) / (name + ".json")).is_file(), name + " has not finished"
met = None
if "{partner}":  # a rendezvous: only a notebook running at the same time can be met (a minute at most)
    while not Path(FIGURES, "{partner}.started").exists() and time.time() < start + 60:
        time.sleep(0.05)
    met = Path(FIGURES, "{partner}.started").exists()
Path(FIGURES, "{name}.json").write_text(json.dumps(dict(start=start, end=time.time(), met=met,
                                                        threads=os.environ.get("OMP_NUM_THREADS"))))
"""


def test_jobs_run_notebooks_side_by_side_and_after_what_they_read(tmp_path):
    import json
    import os

    import nbformat

    nbs, figures = tmp_path / "notebooks", tmp_path / "figures"
    nbs.mkdir()
    for name, needs, partner in (("00_a", [], "c"), ("01_b", [], ""), ("02_c", [], "a"), ("03_d", ["c"], "")):
        _notebook(nbs / f"{name}.ipynb",
                  LANE.format(name=name[-1], needs=needs, partner=partner) + SAVE_PNG.format(name=f"{name}.png"))
    nb = nbformat.read(nbs / "03_d.ipynb", as_version=4)
    nb.metadata["sdlab"] = {"after": ["02_c"]}  # it reads what 02_c writes
    nbformat.write(nb, nbs / "03_d.ipynb")

    assert main(["--notebooks", str(nbs), "--figures", str(figures), "--build", str(tmp_path / "b"), "--jobs", "2"]) == 0
    t = {k: json.loads((figures / f"{k}.json").read_text()) for k in "abcd"}
    assert t["a"]["met"] and t["c"]["met"]  # two lanes: 00_a and 02_c ran at the same time
    assert t["c"]["start"] < t["b"]["start"]  # what another waits for starts first, before the numbered order
    assert t["d"]["start"] >= t["c"]["end"]  # waited for the notebook it names
    assert {v["threads"] for v in t.values()} == {str(max(1, os.cpu_count() // 2))}
    index = (figures / "index.md").read_text()  # each figure credited to its own notebook although lanes overlap
    order = [index.index(x) for n in ("00_a", "01_b", "02_c", "03_d") for x in (f"## {n}.ipynb", f"{n}.png")]
    assert order == sorted(order)


def test_one_lane_runs_a_notebook_after_the_one_it_reads_and_keeps_the_numbered_order_otherwise(tmp_path):
    import nbformat

    nbs, figures = tmp_path / "notebooks", tmp_path / "figures"
    nbs.mkdir()
    log = "from pathlib import Path\nwith open(Path(FIGURES) / 'order.txt', 'a') as f: f.write('{name} ')\n"
    _notebook(nbs / "00_a.ipynb", log.format(name="a") + "assert (Path(FIGURES) / 'b.txt').read_text() == 'b'")
    _notebook(nbs / "01_b.ipynb", log.format(name="b") + "(Path(FIGURES) / 'b.txt').write_text('b')")
    _notebook(nbs / "02_c.ipynb", log.format(name="c"))
    nb = nbformat.read(nbs / "00_a.ipynb", as_version=4)
    nb.metadata["sdlab"] = {"after": ["01_b"]}  # 00_a reads what 01_b writes
    nbformat.write(nb, nbs / "00_a.ipynb")

    assert main(["--notebooks", str(nbs), "--figures", str(figures), "--build", str(tmp_path / "b"), "--jobs", "1"]) == 0
    assert (figures / "order.txt").read_text().split() == ["b", "a", "c"]


def test_jobs_refuse_a_cycle_and_a_count_below_one(tmp_path, capsys):
    import nbformat

    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    for name, after in (("00_a", "01_b"), ("01_b", "00_a")):
        _notebook(nbs / f"{name}.ipynb", "raise SystemExit('must not run')")
        nb = nbformat.read(nbs / f"{name}.ipynb", as_version=4)
        nb.metadata["sdlab"] = {"after": [after]}
        nbformat.write(nb, nbs / f"{name}.ipynb")
    out = ["--notebooks", str(nbs), "--figures", str(tmp_path / "f"), "--build", str(tmp_path / "b")]
    for jobs in ("2", "1"):
        assert main(out + ["--jobs", jobs]) == 2
        assert "notebooks wait for each other" in capsys.readouterr().err
    assert main(out + ["--jobs", "0"]) == 2
    assert "--jobs must be 1 or more" in capsys.readouterr().err
