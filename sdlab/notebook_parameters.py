"""Parameters for papermill reruns of the notebooks (`sdlab figures -p NAME VALUE`).

What each notebook's `parameters` cell declares (read from the cell's Python, not executed), values parsed from
the command line as papermill's own `-p` parses them, the check that every parameter of a run is declared by
some notebook (before anything runs), and a folder name for the run.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import json
import re
from pathlib import Path

RESERVED = ("FIGURES",)
"""Set by `sdlab figures` itself: the folder the figures go to (`--output`)."""


def parse_value(text: str):
    """A command-line value as papermill's `-p` reads it: True, False, None, an int, a float, else the string."""
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_parameters(pairs) -> dict:
    """`[(NAME, VALUE), ...]` from the command line as a dict of parsed values; a name that is not a Python
    identifier, or one given twice, is an error."""
    parameters = {}
    for name, text in pairs or ():
        if not name.isidentifier():
            raise ValueError(f"-p {name} {text}: {name!r} is not a parameter name (a Python identifier, e.g. STEPS)")
        if name in parameters:
            raise ValueError(f"-p {name} is given twice ({parameters[name]!r} and {parse_value(text)!r}); give it once")
        parameters[name] = parse_value(text)
    return parameters


def declared_parameters(notebook: Path) -> dict:
    """The names the notebook's (first) `parameters`-tagged cell assigns, with the source of each default;
    {} when it has no such cell."""
    cells = json.loads(Path(notebook).read_text())["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not tagged:
        return {}
    source = tagged[0]["source"]
    source = "".join(source) if isinstance(source, list) else source
    source = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise ValueError(f"{Path(notebook).name}: its parameters cell is not plain Python ({e.msg}, line {e.lineno})") from e
    declared = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            if isinstance(target, ast.Name) and node.value is not None:
                declared[target.id] = ast.get_source_segment(source, node.value)
    return declared


def assign_parameters(notebooks, parameters: dict) -> dict:
    """For each notebook, the parameters of `parameters` that its parameters cell declares. Raises ValueError,
    listing every notebook's parameters, if some name is declared by none of them or is reserved."""
    reserved = [name for name in parameters if name in RESERVED]
    if reserved:
        raise ValueError(f"{', '.join(reserved)} is set by `sdlab figures` itself; choose the folder with --output")
    declared = {Path(nb): declared_parameters(nb) for nb in notebooks}
    known = sorted({name for names in declared.values() for name in names} - set(RESERVED))
    unknown = [name for name in parameters if name not in known]
    if unknown:
        hints = [f"{name} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(name, known, 1)) else name
                 for name in unknown]
        listing = "\n".join(f"  {nb.name}: {', '.join(n for n in names if n not in RESERVED) or '(none)'}"
                            for nb, names in declared.items())
        raise ValueError(f"no notebook of this run declares {', '.join(hints)}; the notebooks' parameters are:\n"
                         f"{listing}")
    return {nb: {k: v for k, v in parameters.items() if k in names} for nb, names in declared.items()}


def run_slug(parameters: dict, limit: int = 60) -> str:
    """A folder-name-safe name for a run's parameters, e.g. {"STEPS": 10, "MODEL": "a/b"} → "steps-10_model-a-b"
    (over `limit` characters: cut, with a short hash of the whole so different runs stay apart)."""
    parts = [f"{name.lower()}-{re.sub(r'[^A-Za-z0-9.]+', '-', str(value)).strip('-.') or 'empty'}"
             for name, value in parameters.items()]
    slug = "_".join(parts) or "defaults"
    if len(slug) > limit:
        slug = slug[: limit - 9].rstrip("-_.") + "-" + hashlib.sha1(slug.encode()).hexdigest()[:8]
    return slug


def absolute_paths(parameters: dict) -> dict:
    """Parameters whose string value names an existing file or folder (relative to the current directory) with
    that path made absolute: the notebooks run in their own folder, where a relative path would point elsewhere."""
    return {name: str(Path(value).resolve()) if isinstance(value, str) and value and Path(value).exists() else value
            for name, value in parameters.items()}
