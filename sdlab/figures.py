"""`sdlab figures`: run every numbered notebook headless and index the figures they save.

Each `notebooks/NN_*.ipynb` is executed by papermill with its own folder as working directory and its
`FIGURES` parameter set to the repository's `figures/` (absolute), so `savefig(figures / "NN_name.png")`
lands there; the executed copies go to `build/notebooks/` (ignored by git). `figures/index.md` then lists
every PNG under the notebook that wrote it. The executed copies are a report too, so each is checked: every
figure a cell saves is also shown as an image (`display_problems`), none is printed as `<Figure size ...>`
text, and the setup cell writes nothing on stderr; the test suite applies the same check to nbval's runs.

Batch reruns: `sdlab figures -p STEPS 50 -p MODEL some/folder` passes each parameter to every notebook whose
`parameters` cell declares it (values parsed as papermill's `-p` does) and writes that run's figures and index
to a folder of its own, `build/figures-<parameters>/` (executed copies in `build/notebooks-<parameters>/`),
never over the committed `figures/` unless asked with `--output figures`. A parameter that no notebook of the
run declares is an error, listing each notebook's parameters, before anything runs.

Lanes: `--jobs N` runs up to N notebooks at once, each in a kernel limited to cpu_count / N threads (on a small
CPU two single-threaded kernels do more than one with two threads: imports, papermill and the evaluator are
single-threaded Python). A notebook that reads what another writes names it in its metadata,
`"sdlab": {"after": ["06_finetuning"]}`, and starts only once that one has finished (when both are in the run;
with one lane too, where the numbered order is otherwise kept); in lanes a notebook another waits for starts
before the rest, so the chain does not end the run alone.
Each figure is credited to the notebook whose number prefixes its name (`NN_*.png`), as every notebook names them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shlex
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from .notebook_parameters import absolute_paths, assign_parameters, parse_parameters, run_slug

INDEX = "index.md"
IMAGE_TYPES = ("image/png", "image/svg+xml")
FIGURE_AS_TEXT = "<Figure size"
"""What IPython prints for a matplotlib figure it has no image formatter for."""


@dataclass
class NotebookRun:
    """What running one notebook produced."""

    notebook: Path
    figures: list[Path] = field(default_factory=list)
    """PNGs the notebook wrote in this run (or, if it was not run, the ones named after its number)."""
    error: str | None = None
    """None if it ran to the end; else the failure, with the executed copy to read."""
    seconds: float = 0.0
    images: int = 0
    """Image outputs in the executed copy."""
    problems: list[str] = field(default_factory=list)
    """What `display_problems` found in the executed copy ("cell N: ...")."""
    parameters: dict = field(default_factory=dict)
    """The run's parameters this notebook declares and was given (besides FIGURES)."""


def _text(output) -> str:
    """The text of a stream output, or the text/plain of a display or result ("" for anything else)."""
    if output.get("output_type") == "stream":
        text = output.get("text", "")
    else:
        text = output.get("data", {}).get("text/plain", "")
    return "".join(text) if isinstance(text, list) else text


def display_problems(source: str, outputs, setup_cell: bool = False) -> list[str]:
    """What keeps an executed code cell from reading as a report: fewer image outputs than the figures its
    code saves (`.savefig(` calls outside comments), a figure printed as `<Figure size ...>` text, and for the
    notebook's setup cell, anything written on stderr. `outputs` are the cell's nbformat outputs."""
    problems = []
    saved = len(re.findall(r"^[^#\n]*\.savefig\(", source, flags=re.M))
    images = sum(any(kind in output.get("data", {}) for kind in IMAGE_TYPES) for output in outputs)
    if images < saved:
        problems.append(f"saves {saved} figure(s) but shows {images} image(s): end the cell with the figure")
    for output in outputs:
        text = _text(output)
        if FIGURE_AS_TEXT in text:
            problems.append(f"shows a figure as text, not as an image: {text.strip()[:80]!r}")
    if setup_cell:
        stderr = "".join(_text(o) for o in outputs if o.get("output_type") == "stream" and o.get("name") == "stderr")
        if stderr.strip():
            problems.append(f"the setup cell writes on stderr: {stderr.strip()[:300]!r}")
    return problems


def check_executed(path: Path) -> tuple[int, list[str]]:
    """The number of image outputs of an executed notebook, and its `display_problems` as "cell N: ..."."""
    cells = json.loads(Path(path).read_text())["cells"]
    code = [(i, c) for i, c in enumerate(cells) if c["cell_type"] == "code"]
    images, problems = 0, []
    for k, (i, cell) in enumerate(code):
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        outputs = cell.get("outputs", [])
        images += sum(any(kind in o.get("data", {}) for kind in IMAGE_TYPES) for o in outputs)
        problems += [f"cell {i}: {p}" for p in display_problems(source, outputs, setup_cell=k == 0)]
    return images, problems


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


def run_notebook(notebook: Path, build: Path, figures: Path, kernel: str = "python3",
                 parameters: dict | None = None) -> NotebookRun:
    """Execute `notebook` with papermill into `build`, its `FIGURES` parameter pointing at `figures` and its
    other parameters set from `parameters` (all of which its parameters cell should declare)."""
    try:
        import papermill
    except ImportError as e:
        raise ImportError("`sdlab figures` needs papermill: pip install -e '.[notebooks]'") from e
    before = _pngs(figures)
    start = time.perf_counter()
    run = NotebookRun(notebook, parameters=dict(parameters or {}))
    try:
        papermill.execute_notebook(
            str(notebook),
            str(build / notebook.name),
            parameters={**run.parameters, "FIGURES": str(figures.resolve())},
            cwd=str(notebook.parent),
            kernel_name=kernel,
            progress_bar=False,
        )
    except Exception as e:  # papermill raises PapermillExecutionError with the cell's traceback
        run.error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''} " \
                    f"(executed copy: {build / notebook.name})"
    run.seconds = time.perf_counter() - start
    if (build / notebook.name).is_file():
        run.images, run.problems = check_executed(build / notebook.name)
    after = _pngs(figures)
    run.figures = sorted((p for p, t in after.items() if before.get(p) != t), key=after.get)  # in order written
    return run


def _run_in_lane(notebook: Path, build: Path, figures: Path, kernel: str, parameters: dict, threads: int):
    """`run_notebook` in a worker process whose kernel gets `threads` CPU threads (through the environment the
    kernel inherits: OMP_NUM_THREADS is what torch reads at import)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    return run_notebook(notebook, build, figures, kernel, parameters)


def prerequisites(notebook: Path) -> list[str]:
    """The notebooks (file stems) `notebook` must run after: its metadata's `sdlab.after`."""
    after = json.loads(Path(notebook).read_text()).get("metadata", {}).get("sdlab", {}).get("after", [])
    if not isinstance(after, list) or not all(isinstance(a, str) for a in after):
        raise ValueError(f"{notebook}: metadata sdlab.after must be a list of notebook names, got {after!r}")
    return after


def _next_ready(pending: list[Path], waits: dict, finished: set) -> list[Path]:
    """The `pending` notebooks whose prerequisites have all finished, in `pending`'s order."""
    return [nb for nb in pending if all(a in finished for a in waits[nb])]


def _cycle(pending: list[Path]) -> ValueError:
    return ValueError(f"notebooks wait for each other (metadata sdlab.after): {[p.name for p in pending]}")


def run_notebooks(notebooks: list[Path], build: Path, figures: Path, kernel: str, given: dict, jobs: int = 1,
                  report=lambda run: None) -> dict[str, NotebookRun]:
    """Run `notebooks`, each after its `prerequisites` of this run; `report` is called with each finished run.
    One lane (`jobs` 1) keeps the numbered order but for that; with more, up to `jobs` run at once and those
    another waits for start first. Returns the runs by notebook name, in the numbered order."""
    stems = {nb.stem for nb in notebooks}
    waits = {nb: [a for a in prerequisites(nb) if a in stems] for nb in notebooks}
    ran, finished = {}, set()
    if jobs <= 1:
        pending = list(notebooks)
        while pending:
            ready = _next_ready(pending, waits, finished)
            if not ready:
                raise _cycle(pending)
            nb = ready[0]
            pending.remove(nb)
            print(f"running {nb} ...", flush=True)
            ran[nb.name] = run = run_notebook(nb, build, figures, kernel, given[nb])
            finished.add(nb.stem)
            report(run)
        return {nb.name: ran[nb.name] for nb in notebooks}
    awaited = {a for after in waits.values() for a in after}
    threads = max(1, (os.cpu_count() or 1) // jobs)
    # what others wait for starts first (it heads the longest chain), then the numbered order
    pending = sorted(notebooks, key=lambda nb: (nb.stem not in awaited, notebooks.index(nb)))
    running = {}
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        while pending or running:
            for nb in _next_ready(pending, waits, finished)[: jobs - len(running)]:
                pending.remove(nb)
                print(f"running {nb} ({threads} thread{'s' * (threads > 1)}) ...", flush=True)
                running[pool.submit(_run_in_lane, nb, build, figures, kernel, given[nb], threads)] = nb
            if not running:  # only reachable through a cycle of `after`
                raise _cycle(pending)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                nb = running.pop(future)
                run = future.result()
                prefix = nb.name.split("_")[0] + "_"  # lanes write into one folder: credit figures by their name
                run.figures = [p for p in run.figures if p.name.startswith(prefix)]
                ran[nb.name] = run
                finished.add(nb.stem)
                report(run)
    return {nb.name: ran[nb.name] for nb in notebooks}


def index_markdown(runs: list[NotebookRun], figures: Path, parameters: dict | None = None,
                   build: Path = Path("build/notebooks")) -> str:
    """The index page: one section per notebook with its figures, then any PNG no notebook claims; with
    `parameters`, the run's parameters and, per notebook, those it was given."""
    lines = [
        "# Figures",
        "",
        "Written by `make figures` (`python -m sdlab figures`), which runs every notebook in `notebooks/` with",
        f"papermill; the executed notebooks are in `{build.as_posix().rstrip('/')}/`. Do not edit: it is regenerated.",
        "",
    ]
    if parameters:
        given = " ".join(f"-p {name} {shlex.quote(str(value))}" for name, value in parameters.items())
        lines += [f"Parameters of this run: `sdlab figures {given}`; each notebook got those its parameters cell",
                  "declares, and its own defaults for the rest.", ""]
    claimed = set()
    for run in runs:
        lines += [f"## {run.notebook.name}", ""]
        if parameters:
            shown = ", ".join(f"`{k} = {v!r}`" for k, v in run.parameters.items()) or "none (its defaults)"
            lines += [f"Parameters: {shown}", ""]
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


def indexed_figures(index: Path) -> dict[str, list[str]]:
    """{notebook name: its figures in the order `index_markdown` listed them} from an index page (empty if none)."""
    out, section = {}, None
    if not index.is_file():
        return out
    for line in index.read_text().splitlines():
        if line.startswith("## "):
            section = out.setdefault(line[3:].strip(), [])
        elif line.startswith("### ") and section is not None:
            section.append(line[4:].strip())
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="sdlab figures", description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=Path, default=Path("notebooks"), help="folder of NN_*.ipynb")
    parser.add_argument("--output", "--figures", dest="figures", type=Path, default=None,
                        help="where the PNGs and index go (default: figures/, or with -p build/figures-<parameters>/)")
    parser.add_argument("--build", type=Path, default=None,
                        help="executed copies (default: build/notebooks/, or with -p build/notebooks-<parameters>/)")
    parser.add_argument("--only", nargs="*", default=(), help="run only notebooks whose name contains one of these")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name")
    parser.add_argument("--jobs", "-j", type=int, default=1,
                        help="notebooks run at once, each kernel with cpu_count / JOBS threads (default 1)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
                        help="pass NAME = VALUE to every notebook whose parameters cell declares NAME (repeatable; "
                             "VALUE read as papermill's -p reads it: True/False/None, int, float, else text)")
    args = parser.parse_args(argv)

    if args.jobs < 1:
        print(f"sdlab figures: --jobs must be 1 or more (notebooks run at once), got {args.jobs}", file=sys.stderr)
        return 2
    notebooks = find_notebooks(args.notebooks, args.only)
    try:  # before anything runs: every parameter must be declared by some notebook of this run
        typed = parse_parameters(args.parameter)
        parameters = absolute_paths(typed)
        given = assign_parameters(notebooks, parameters) if parameters else {nb: {} for nb in notebooks}
    except ValueError as e:
        print(f"sdlab figures: {e}", file=sys.stderr)
        return 2
    slug = run_slug(typed)  # the folder is named after the values as typed, before paths are made absolute
    args.figures = args.figures or (Path("build") / f"figures-{slug}" if parameters else Path("figures"))
    args.build = args.build or (Path("build") / f"notebooks-{slug}" if parameters else Path("build/notebooks"))
    if parameters:
        print(f"parameters {parameters}: figures to {args.figures}/, executed notebooks to {args.build}/", flush=True)
    args.figures.mkdir(parents=True, exist_ok=True)
    args.build.mkdir(parents=True, exist_ok=True)
    def report(run):
        status = "FAILED: " + run.error if run.error else f"{len(run.figures)} figures, {run.images} images shown"
        print(f"  {run.notebook.name}: {run.seconds:.0f}s, {status}", flush=True)
        for problem in run.problems:
            print(f"  {run.notebook.name} {problem}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    try:
        ran = run_notebooks(notebooks, args.build, args.figures, args.kernel, given, args.jobs, report)
    except ValueError as e:
        print(f"sdlab figures: {e}", file=sys.stderr)
        return 2
    print(f"{len(ran)} notebook(s) in {time.perf_counter() - started:.0f}s ({args.jobs} at a time)", flush=True)
    runs = []
    # notebooks skipped by --only keep the figures named after them, in the order the index listed them (a run
    # with parameters lists only its own)
    listed = indexed_figures(args.figures / INDEX)
    for nb in notebooks if parameters else find_notebooks(args.notebooks):
        prefix = nb.name.split("_")[0] + "_"
        if nb.name in ran:
            runs.append(ran[nb.name])
            continue
        order = {name: i for i, name in enumerate(listed.get(nb.name, []))}
        kept = sorted(args.figures.glob(prefix + "*.png"), key=lambda png: (order.get(png.name, len(order)), png.name))
        runs.append(NotebookRun(nb, kept))
    (args.figures / INDEX).write_text(index_markdown(runs, args.figures, typed, args.build))
    print(f"wrote {args.figures / INDEX}")
    failed = [r.notebook.name for r in ran.values() if r.error]
    if failed:
        print(f"sdlab figures: {len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
    unreadable = [r.notebook.name for r in ran.values() if r.problems and not r.error]
    if unreadable:
        print(f"sdlab figures: {len(unreadable)} executed notebook(s) do not show their figures as images or "
              f"write on stderr in the setup cell (listed above): {', '.join(unreadable)}", file=sys.stderr)
    return 1 if failed or unreadable else 0


if __name__ == "__main__":
    sys.exit(main())
