"""`sdlab colab`: the GitHub repository that every notebook's Colab badge opens and its setup cell installs.

The address lives in one place, `pyproject.toml`'s `[project.urls] Repository` (the standard field: pip and
PyPI show it, and an installed sdlab carries it in its metadata), with the branch beside it in
`[tool.sdlab] colab-branch`. Until the project is published it holds the placeholder
`https://github.com/OWNER/sdlab`, and sdlab says so rather than calling it a working link. A fork points every
badge and install cell at itself with one command, run in its checkout:

    sdlab colab --repo github.com/YOU/sdlab [--branch main]

It writes the address into pyproject.toml and, in each `notebooks/NN_*.ipynb`, rewrites two lines and nothing
else: the badge line of the first (markdown) cell and the `%pip install ... sdlab @ git+...` line of the setup
(first code) cell. `sdlab colab` alone re-derives them from pyproject.toml; `sdlab colab --check` writes nothing
and exits 1 when a notebook disagrees (tests/test_colab.py runs the same check). Bad input changes no file.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

PLACEHOLDER_OWNER = "OWNER"
"""The owner in the placeholder address: no badge built on it opens anything."""

COLAB = "https://colab.research.google.com/github/"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
INSTALL = re.compile(r"^(?P<indent>\s*)[%!]pip install\b.*?\bsdlab(?P<extras>\[[\w,\s-]*\])?\s*@")
"""A setup-cell line that installs sdlab from a URL; its indent and extras (`sdlab[notebooks] @ ...`) are kept."""
STRAY = ("colab.research.google.com/github/", "git+https://github.com/")
"""Addresses allowed only on the badge and install lines, where `sdlab colab` keeps them right."""

_OWNER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}")  # GitHub's rule for user names
_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
_BRANCH = re.compile(r"[A-Za-z0-9._/-]{1,200}")  # a git branch name that needs no escaping in a URL


class ColabError(ValueError):
    """Bad input for `sdlab colab`: a malformed address or branch, or a notebook without its Colab lines."""


@dataclass(frozen=True)
class Repo:
    """A GitHub repository and branch that Colab opens notebooks from."""

    owner: str
    name: str
    branch: str = "main"

    @property
    def address(self) -> str:
        return f"github.com/{self.owner}/{self.name}"

    @property
    def url(self) -> str:
        return f"https://{self.address}"

    @property
    def placeholder(self) -> bool:
        """True for `github.com/OWNER/...`: a badge built on it leads nowhere."""
        return self.owner == PLACEHOLDER_OWNER

    def badge_url(self, notebook: str) -> str:
        return f"{COLAB}{self.owner}/{self.name}/blob/{self.branch}/notebooks/{notebook}"

    def badge_line(self, notebook: str) -> str:
        return (f'<a href="{self.badge_url(notebook)}" target="_parent">'
                f'<img src="{BADGE_IMAGE}" alt="Open In Colab"/></a>')

    def install_line(self, indent: str = "", extras: str = "") -> str:
        return f'{indent}%pip install -q "sdlab{extras} @ git+{self.url}@{self.branch}"'


def parse_repo(address: str, branch: str = "main") -> Repo:
    """`github.com/OWNER/NAME` (also with `https://` in front or `.git` behind) and a branch name, checked."""
    match = re.fullmatch(r"(?:https://)?github\.com/([^/]*)/([^/]*?)(?:\.git)?/?", address.strip())
    if not match:
        raise ColabError(f"expected a GitHub repository as github.com/OWNER/NAME (Colab opens notebooks from "
                         f"GitHub only; the branch goes in --branch), got {address!r}")
    owner, name = match.groups()
    if not _OWNER.fullmatch(owner):
        raise ColabError(f"{owner!r} in {address!r} is not a GitHub owner (letters, digits and single inner "
                         "hyphens, at most 39)")
    if not _NAME.fullmatch(name) or name in (".", ".."):
        raise ColabError(f"{name!r} in {address!r} is not a GitHub repository name (letters, digits, '.', '_', '-')")
    parts = branch.split("/")
    if (not _BRANCH.fullmatch(branch) or ".." in branch or branch.endswith(".lock")
            or any(not part or part.startswith(".") or part.endswith(".") for part in parts) or branch[0] == "-"):
        raise ColabError(f"{branch!r} is not a branch name a Colab address can carry (letters, digits, '.', '_', "
                         "'-' and '/' between parts; no '..', no part starting or ending with '.', no leading '-')")
    return Repo(owner, name, branch)


def read_config(root: Path) -> Repo:
    """The repository and branch configured in `root/pyproject.toml`."""
    pyproject = Path(root) / "pyproject.toml"
    if not pyproject.is_file():
        raise ColabError(f"no pyproject.toml in {Path(root).resolve()}; run `sdlab colab` in the sdlab checkout "
                         "or pass --root")
    return config_of(pyproject.read_text(encoding="utf-8"), str(pyproject))


def config_of(text: str, where: str = "pyproject.toml") -> Repo:
    """The repository and branch that a pyproject.toml's text configures."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ColabError(f"{where} is not valid TOML: {e}") from None
    address = data.get("project", {}).get("urls", {}).get("Repository")
    branch = data.get("tool", {}).get("sdlab", {}).get("colab-branch")
    if data.get("project", {}).get("name") != "sdlab" or not isinstance(address, str) or not isinstance(branch, str):
        raise ColabError(f"{where} needs `name = \"sdlab\"`, `[project.urls] Repository = \"https://github.com/"
                         "OWNER/NAME\"` and `[tool.sdlab] colab-branch = \"main\"`")
    try:
        return parse_repo(address, branch)
    except ColabError as e:
        raise ColabError(f"{where}: {e}") from None


def configured_text(text: str, repo: Repo) -> str:
    """pyproject.toml's text with `repo` as its repository and Colab branch; every other byte kept."""
    for table, key, value in (("project.urls", "Repository", repo.url), ("tool.sdlab", "colab-branch", repo.branch)):
        pattern = rf'(?ms)(^\[{re.escape(table)}\]\s*$(?:(?!^\[).)*?^{re.escape(key)}\s*=\s*)"[^"\n]*"'
        text, found = re.subn(pattern, lambda m: m.group(1) + json.dumps(value), text, count=1)
        if not found:
            raise ColabError(f"pyproject.toml has no `{key} = \"...\"` line in its [{table}] table")
    return text


def _load(text: str, notebook: str) -> dict:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ColabError(f"{notebook} is not a notebook (not JSON: {e})") from None


def _lines(cell) -> list[str]:
    source = cell.get("source", "")
    return ("".join(source) if isinstance(source, list) else source).splitlines()


def colab_lines(nb: dict, notebook: str) -> tuple[str, str, re.Match]:
    """The badge line of the first cell and the install line of the setup cell, found or a clear error."""
    cells = nb.get("cells", [])
    badges = [line for line in _lines(cells[0]) if BADGE_IMAGE in line] if cells else []
    if not cells or cells[0].get("cell_type") != "markdown" or len(badges) != 1:
        raise ColabError(f"{notebook}: the first cell must be markdown with exactly one Colab badge line "
                         f"(an <a href=...> around {BADGE_IMAGE}); found {len(badges)}")
    setup = next((c for c in cells if c.get("cell_type") == "code"), None)
    lines = _lines(setup) if setup else []
    installs = [m for m in map(INSTALL.match, lines) if m]
    if len(installs) != 1 or not any("import google.colab" in line for line in lines):
        raise ColabError(f"{notebook}: the setup (first code) cell must install sdlab with exactly one "
                         f"`%pip install -q \"sdlab @ git+...\"` line inside `try: import google.colab`; "
                         f"found {len(installs)} install line(s)")
    return badges[0], installs[0].string, installs[0]


def expected_lines(nb: dict, notebook: str, repo: Repo) -> dict[str, str]:
    """{line as it is: line as `repo` derives it} for the notebook's badge and install lines."""
    badge, install, match = colab_lines(nb, notebook)
    return {badge: repo.badge_line(notebook), install: repo.install_line(match["indent"], match["extras"] or "")}


def problems(path: Path, repo: Repo) -> list[str]:
    """How the notebook at `path` disagrees with `repo` (empty: its badge opens itself from `repo` in Colab and
    its setup cell installs `repo`)."""
    try:
        nb = _load(path.read_text(encoding="utf-8"), path.name)
        wanted = expected_lines(nb, path.name, repo)
    except ColabError as e:
        return [str(e)]
    found = [f"{path.name}: {_shown(old)} should be {_shown(new)} (`sdlab colab` rewrites it)"
             for old, new in wanted.items() if old != new]
    for i, cell in enumerate(nb["cells"]):
        found += [f"{path.name}: cell {i} mentions a repository address outside the badge and install lines: "
                  f"{line.strip()!r}" for line in _lines(cell) if line not in wanted and any(s in line for s in STRAY)]
    return found


def _shown(line: str) -> str:
    """A badge line by its link, an install line as it reads."""
    href = re.search(r'href="([^"]*)"', line)
    return f"badge {href[1]}" if href else repr(line.strip())


def rewritten(text: str, notebook: str, repo: Repo) -> str:
    """The notebook's text with its badge and install lines derived from `repo`; every other byte kept."""
    for old, new in expected_lines(_load(text, notebook), notebook, repo).items():
        if old == new:
            continue
        encoded = json.dumps(old, ensure_ascii=False)[1:-1]  # as the line sits inside its JSON string
        if text.count(encoded) != 1:
            raise ColabError(f"{notebook}: the line {old!r} occurs {text.count(encoded)} times; edit it by hand")
        text = text.replace(encoded, json.dumps(new, ensure_ascii=False)[1:-1])
    left = [old for old, new in expected_lines(_load(text, notebook), notebook, repo).items() if old != new]
    if left:
        raise ColabError(f"{notebook}: still disagrees after rewriting: {left}; edit it by hand")
    return text


def notebooks(root: Path) -> list[Path]:
    found = sorted((Path(root) / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise ColabError(f"no notebooks/NN_*.ipynb under {Path(root).resolve()}; run in the sdlab checkout or pass --root")
    return found


def point_at(root: Path, repo: Repo) -> list[Path]:
    """Write `repo` into pyproject.toml and every notebook's Colab lines; returns the files changed. Every file is
    checked before the first is written, so bad input changes nothing."""
    root = Path(root)
    paths = notebooks(root)
    pyproject = root / "pyproject.toml"
    config = configured_text(pyproject.read_text(encoding="utf-8"), repo)
    if config_of(config) != repo:
        raise ColabError("pyproject.toml: the rewritten file does not read back as the new address; edit it by hand")
    for path in paths:  # all or nothing: fail before the first write
        rewritten(path.read_text(encoding="utf-8"), path.name, repo)
    changed = []
    if config != pyproject.read_text(encoding="utf-8"):
        pyproject.write_text(config, encoding="utf-8")
        changed.append(pyproject)
    for path in paths:  # each read fresh and written back at once: other edits to the notebook are kept
        text = path.read_text(encoding="utf-8")
        new = rewritten(text, path.name, repo)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


def placeholder_note(repo: Repo) -> str:
    return (f"{repo.address} is a placeholder, not a working link: the Colab badges lead nowhere until a published "
            f"repository is set with `sdlab colab --repo github.com/YOU/{repo.name}`")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="sdlab colab", description=__doc__.splitlines()[0])
    parser.add_argument("--repo", help="github.com/OWNER/NAME to point the badges and install cells at "
                                       "(default: pyproject.toml's [project.urls] Repository)")
    parser.add_argument("--branch", help="branch the badges open and the cells install (default: pyproject.toml's "
                                         "[tool.sdlab] colab-branch)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if any notebook disagrees")
    parser.add_argument("--root", type=Path, default=Path("."), help="the sdlab checkout (default: here)")
    args = parser.parse_args(argv)
    try:
        current = read_config(args.root)
        repo = parse_repo(args.repo or current.address, args.branch or current.branch)
        if args.check:
            if args.repo or args.branch:
                raise ColabError("--check compares the notebooks with pyproject.toml; it takes no --repo or --branch")
            found = [p for path in notebooks(args.root) for p in problems(path, repo)]
            print("\n".join(found) or f"every notebook's badge and install cell point at {repo.address} "
                                       f"(branch {repo.branch})")
        else:
            changed = point_at(args.root, repo)
            found = []
            print(f"pointed the Colab badges and install cells at {repo.address} (branch {repo.branch}); "
                  f"changed {len(changed)} file(s)" + "".join(f"\n  {p}" for p in changed))
    except ColabError as e:
        print(f"sdlab colab: error: {e}", file=sys.stderr)
        return 2
    if repo.placeholder:
        print(f"sdlab colab: note: {placeholder_note(repo)}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
