"""`sdlab figures`: run every numbered notebook headless and index the figures they save.

Each `notebooks/NN_*.ipynb` is executed by papermill with its own folder as working directory and its
`FIGURES` parameter set to the repository's `figures/` (absolute), so `savefig(figures / "NN_name.png")`
lands there; the executed copies go to `build/notebooks/` (ignored by git). `figures/index.md` then lists
every PNG under the notebook that wrote it.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

INDEX = "index.md"


@dataclass
class NotebookRun:
    """What running one notebook produced."""

    notebook: Path
    figures: list[Path] = field(default_factory=list)
    """PNGs the notebook wrote in this run (or, if it was not run, the ones named after its number)."""
    error: str | None = None
    """None if it ran to the end; else the failure, with the executed copy to read."""
    seconds: float = 0.0


def find_notebooks(folder: Path, only=()) -> list[Path]:
    """The numbered notebooks `NN_*.ipynb` of `folder`, in order; `only`: keep names containing one of these."""
    if not folder.is_dir():
        raise FileNotFoundError(f"no notebooks folder at {folder.resolve()}; run from the repository root")
    found = sorted(folder.glob("[0-9]*.ipynb"))
    if only:
        found = [p for p in found if any(key in p.name for key in only)]
    if not found:
        raise FileNotFoundError(f"no numbered notebooks in {folder}" + (f" matching {list(only)}" if only else ""))
    return found


def _pngs(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.glob("*.png")}


def run_notebook(notebook: Path, build: Path, figures: Path, kernel: str = "python3") -> NotebookRun:
    """Execute `notebook` with papermill into `build`, its `FIGURES` parameter pointing at `figures`."""
    try:
        import papermill
    except ImportError as e:
        raise ImportError("`sdlab figures` needs papermill: pip install -e '.[notebooks]'") from e
    before = _pngs(figures)
    start = time.perf_counter()
    run = NotebookRun(notebook)
    try:
        papermill.execute_notebook(
            str(notebook),
            str(build / notebook.name),
            parameters={"FIGURES": str(figures.resolve())},
            cwd=str(notebook.parent),
            kernel_name=kernel,
            progress_bar=False,
        )
    except Exception as e:  # papermill raises PapermillExecutionError with the cell's traceback
        run.error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''} " \
                    f"(executed copy: {build / notebook.name})"
    run.seconds = time.perf_counter() - start
    after = _pngs(figures)
    run.figures = sorted((p for p, t in after.items() if before.get(p) != t), key=after.get)  # in order written
    return run


def index_markdown(runs: list[NotebookRun], figures: Path) -> str:
    """The index page: one section per notebook with its figures, then any PNG no notebook claims."""
    lines = [
        "# Figures",
        "",
        "Written by `make figures` (`python -m sdlab figures`), which runs every notebook in `notebooks/` with",
        "papermill; the executed notebooks are in `build/notebooks/`. Do not edit: it is regenerated.",
        "",
    ]
    claimed = set()
    for run in runs:
        lines += [f"## {run.notebook.name}", ""]
        if run.error:
            lines += [f"**failed in the last run**: {run.error}", ""]
        for png in run.figures:
            claimed.add(png.name)
            lines += [f"### {png.name}", "", f"![{png.name}]({png.name})", ""]
        if not run.figures:
            lines += ["(no figures)", ""]
    others = sorted(p.name for p in figures.glob("*.png") if p.name not in claimed)
    if others:
        lines += ["## Not written by any notebook in the last run (stale?)", ""]
        lines += [f"- [{name}]({name})" for name in others] + [""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="sdlab figures", description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=Path, default=Path("notebooks"), help="folder of NN_*.ipynb")
    parser.add_argument("--figures", type=Path, default=Path("figures"), help="where the PNGs and index go")
    parser.add_argument("--build", type=Path, default=Path("build/notebooks"), help="executed copies")
    parser.add_argument("--only", nargs="*", default=(), help="run only notebooks whose name contains one of these")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name")
    args = parser.parse_args(argv)

    notebooks = find_notebooks(args.notebooks, args.only)
    args.figures.mkdir(parents=True, exist_ok=True)
    args.build.mkdir(parents=True, exist_ok=True)
    ran = {}
    for nb in notebooks:
        print(f"running {nb} ...", flush=True)
        run = run_notebook(nb, args.build, args.figures, args.kernel)
        status = "FAILED: " + run.error if run.error else f"{len(run.figures)} figures"
        print(f"  {run.seconds:.0f}s, {status}", flush=True)
        ran[nb.name] = run
    runs = []
    for nb in find_notebooks(args.notebooks):  # notebooks skipped by --only keep the figures named after them
        prefix = nb.name.split("_")[0] + "_"
        runs.append(ran.get(nb.name) or NotebookRun(nb, sorted(args.figures.glob(prefix + "*.png"))))
    (args.figures / INDEX).write_text(index_markdown(runs, args.figures))
    print(f"wrote {args.figures / INDEX}")
    failed = [r.notebook.name for r in ran.values() if r.error]
    if failed:
        print(f"sdlab figures: {len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
