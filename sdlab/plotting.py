"""The figure type that sdlab's plots return: a matplotlib `Figure` that a notebook shows as an image.

A `matplotlib.figure.Figure` built without pyplot has no image form in IPython unless pyplot's inline backend
was set up by some earlier import; otherwise a cell that ends with it prints `<Figure size 960x235 with 6
Axes>`. This `Figure` renders itself to PNG (`_repr_png_`, which JupyterLab, Colab, VS Code and papermill ask
for) and names itself in plain text, and it stays out of pyplot's global state: it is never registered with
pyplot, so it is never shown twice, never kept alive by pyplot, and a script only ever saves it.
"""

from __future__ import annotations

import io

import matplotlib.figure


class Figure(matplotlib.figure.Figure):
    """A matplotlib `Figure` that displays itself as a PNG in a notebook; everything else (`savefig`, axes)
    is matplotlib's."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()

    def __repr__(self) -> str:
        width, height = self.get_size_inches() * self.dpi
        title = self._suptitle.get_text() if self._suptitle is not None else ""
        return f"<sdlab figure, {width:.0f}x{height:.0f} px, {len(self.axes)} axes{f': {title!r}' if title else ''}>"


def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, layout: str | None = "constrained", **kwargs):
    """`pyplot.subplots` without pyplot: a `Figure` and its axes (`kwargs` go to `Figure.subplots`, e.g.
    `squeeze=False`, `sharex=True`)."""
    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(nrows, ncols, **kwargs)
