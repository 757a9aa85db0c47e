"""What a notebook reader sees: sdlab's figures display as images (not `<Figure size ...>` text) without pyplot,
and importing sdlab writes no notice that concerns nothing on stderr.

The notebooks themselves are checked on nbval's run of them (notebooks/conftest.py) and on papermill's in
`sdlab figures` (tests/test_figures.py runs a small one); these tests are the cheap half.
"""

import logging
import subprocess
import sys

import numpy as np
from IPython.core.formatters import DisplayFormatter

from sdlab import viz
from sdlab.figures import display_problems
from sdlab.models import _NoImageProcessorFallbackNotice

PNG = b"\x89PNG\r\n\x1a\n"


def _figures(tmp_path):
    from sdlab.finetune import plots
    from sdlab.toyworld import export_imagefolder

    images = [np.zeros((8, 8, 3)), np.ones((8, 8, 3))]
    fig, ax = viz.subplots(figsize=(3, 2))
    ax.plot([0, 1], [1, 0])
    return {
        "image_row": viz.image_row(images, ["a", "b"], title="a title"),
        "image_grid": viz.image_grid([images, images], ["r1", "r2"]),
        "strength_curve": viz.strength_curve([0, 1, 2], [0.1, 0.2, 0.3]),
        "subplots": fig,
        "dataset_figure": plots.dataset_figure(export_imagefolder(tmp_path / "data", 2, seed=0), n=2),
    }


def test_sdlab_figures_display_as_png_and_never_as_figure_size_text(tmp_path):
    for name, fig in _figures(tmp_path).items():
        data, _ = DisplayFormatter().format(fig)  # what a Jupyter kernel sends for a cell ending in `fig`
        assert data.get("image/png", b"").startswith(PNG), f"{name}: no PNG in {sorted(data)}"
        assert "<Figure size" not in data["text/plain"], f"{name}: {data['text/plain']}"
        assert fig.canvas.manager is None, f"{name}: registered with pyplot"


def test_the_text_of_a_figure_names_its_size_axes_and_title():
    fig = viz.image_row([np.zeros((8, 8, 3))] * 3, ["a", "b", "c"], size=2.0, title="a red cat")
    assert repr(fig) == f"<sdlab figure, 600x{fig.get_size_inches()[1] * fig.dpi:.0f} px, 3 axes: 'a red cat'>"


def test_display_problems_finds_what_the_notebooks_showed_before():
    source = 'fig = viz.word_heat_maps(cap)\nfig.savefig(figures / "02.png")\nfig'
    as_text = {"output_type": "execute_result", "data": {"text/plain": "<Figure size 960x235 with 6 Axes>"}}
    problems = display_problems(source, [as_text])
    assert len(problems) == 2 and "saves 1 figure(s) but shows 0" in problems[0] and "as text" in problems[1]

    shown = {"output_type": "execute_result", "data": {"image/png": "iVBO", "text/plain": "<sdlab figure>"}}
    assert display_problems(source, [shown]) == []
    assert display_problems("# fig.savefig(path) is a comment\nx = 1", []) == []

    warning = {"output_type": "stream", "name": "stderr", "text": "[transformers] `CLIPImageProcessor` requires"}
    assert display_problems("import sdlab", [warning]) == []
    assert "stderr" in display_problems("import sdlab", [warning], setup_cell=True)[0]


def _record(message):
    return logging.LogRecord("transformers.utils.import_utils", logging.WARNING, __file__, 1, message, None, None)


def test_only_the_image_processor_fallback_notice_is_dropped():
    keep = _NoImageProcessorFallbackNotice().filter
    assert not keep(_record("`CLIPImageProcessor` requires torchvision (not installed); falling back to "
                            "`CLIPImageProcessorPil` for backward compatibility."))
    assert not keep(_record("`SiglipImageProcessor` requires torchvision (not installed); falling back to "
                            "`SiglipImageProcessorPil` for backward compatibility."))
    assert keep(_record("Could not import module 'CLIPTextModel'."))
    assert keep(_record("LANCZOS resample requires torchvision >= 0.27"))


def test_sdlab_help_writes_nothing_on_stderr():
    done = subprocess.run([sys.executable, "-m", "sdlab", "--help"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "usage: sdlab" in done.stdout
    assert done.stderr == ""
