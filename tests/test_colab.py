"""Colab badges and install cells: derived from pyproject.toml's one repository address by `sdlab colab`."""

import json
import re
import shutil
from pathlib import Path

import pytest

from sdlab import cli
from sdlab.colab import Repo, parse_repo, problems, read_config, rewritten

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
BADGE = re.compile(r'<a href="([^"]*)" target="_parent"><img src="https://colab.research.google.com/assets/'
                   r'colab-badge.svg" alt="Open In Colab"/></a>')


def source(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def colab_lines(path: Path) -> tuple[str, str]:
    """The badge's link and the install line, read without sdlab.colab."""
    cells = json.loads(path.read_text())["cells"]
    setup = next(c for c in cells if c["cell_type"] == "code")
    installs = [line.strip() for line in source(setup).splitlines() if "pip install" in line]
    return BADGE.findall(source(cells[0])), installs


def test_there_are_numbered_notebooks():
    assert len(NOTEBOOKS) >= 7


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_badge_and_install_cell_follow_the_configured_repository(path):
    repo = read_config(REPO)
    badges, installs = colab_lines(path)
    assert badges == [f"https://colab.research.google.com/github/{repo.owner}/{repo.name}/blob/{repo.branch}/"
                      f"notebooks/{path.name}"], f"{path.name}: run `sdlab colab`"
    assert installs == [f'%pip install -q "sdlab @ git+https://github.com/{repo.owner}/{repo.name}@{repo.branch}"'], \
        f"{path.name}: run `sdlab colab`"
    assert problems(path, repo) == []


@pytest.fixture
def checkout(tmp_path) -> Path:
    """pyproject.toml and the numbered notebooks, copied: a checkout that `sdlab colab` may rewrite."""
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    (tmp_path / "notebooks").mkdir()
    for path in NOTEBOOKS:
        shutil.copy(path, tmp_path / "notebooks")
    return tmp_path


def contents(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def changed_lines(before: str, after: str) -> int:
    a, b = before.splitlines(), after.splitlines()
    assert len(a) == len(b)
    return sum(x != y for x, y in zip(a, b))


def test_one_command_points_every_badge_and_install_cell_at_a_fork(checkout, capsys):
    before = contents(checkout)
    assert cli.main(["colab", "--repo", "github.com/me-too/fork", "--branch", "dev/v2", "--root", str(checkout)]) == 0
    assert read_config(checkout) == Repo("me-too", "fork", "dev/v2")
    after = contents(checkout)
    assert changed_lines(before["pyproject.toml"], after["pyproject.toml"]) == 2
    for path in NOTEBOOKS:
        name = f"notebooks/{path.name}"
        assert changed_lines(before[name], after[name]) == 2, f"{name}: only the badge and install lines change"
        badges, installs = colab_lines(checkout / name)
        assert badges == [f"https://colab.research.google.com/github/me-too/fork/blob/dev/v2/notebooks/{path.name}"]
        assert installs == ['%pip install -q "sdlab @ git+https://github.com/me-too/fork@dev/v2"']
    assert "placeholder" not in capsys.readouterr().err
    assert cli.main(["colab", "--root", str(checkout)]) == 0 and contents(checkout) == after  # idempotent
    assert cli.main(["colab", "--check", "--root", str(checkout)]) == 0


def test_check_fails_when_a_badge_or_install_line_disagrees(checkout, capsys):
    first, second = checkout / "notebooks" / NOTEBOOKS[0].name, checkout / "notebooks" / NOTEBOOKS[1].name
    first.write_text(first.read_text().replace(f"notebooks/{first.name}", f"notebooks/{second.name}"))
    second.write_text(second.read_text().replace("/OWNER/sdlab@main", "/OWNER/sdlab@dev"))
    assert cli.main(["colab", "--check", "--root", str(checkout)]) == 1
    out = capsys.readouterr().out
    assert first.name in out and second.name in out and "sdlab colab" in out
    assert problems(first, read_config(checkout)) and problems(second, read_config(checkout))


def test_a_repository_address_elsewhere_in_a_notebook_is_reported(checkout):
    path = checkout / "notebooks" / NOTEBOOKS[0].name
    nb = json.loads(path.read_text())
    nb["cells"][-1]["source"].append("\nSee https://colab.research.google.com/github/someone/else/blob/main/x.ipynb")
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    assert any("outside the badge and install lines" in p for p in problems(path, read_config(checkout)))


def test_the_placeholder_is_never_called_a_working_link(checkout, capsys):
    assert read_config(REPO).placeholder == (read_config(REPO).owner == "OWNER")
    assert cli.main(["colab", "--check", "--root", str(checkout)]) == 0
    assert "placeholder, not a working link" in capsys.readouterr().err
    assert Repo("OWNER", "sdlab").placeholder and not Repo("me", "sdlab").placeholder


@pytest.mark.parametrize("address", ["https://github.com/me/sdlab", "github.com/me/sdlab.git", "github.com/me/sdlab/"])
def test_address_spellings(address):
    assert parse_repo(address) == Repo("me", "sdlab", "main")


@pytest.mark.parametrize("address, branch, says", [
    ("gitlab.com/me/sdlab", None, "GitHub only"),
    ("http://github.com/me/sdlab", None, "github.com/OWNER/NAME"),
    ("github.com/me", None, "github.com/OWNER/NAME"),
    ("github.com/me/sdlab/tree/main", None, "--branch"),
    ("github.com/-me/sdlab", None, "not a GitHub owner"),
    ("github.com/me/sd lab", None, "not a GitHub repository name"),
    ("github.com/me/sdlab", "a..b", "not a branch name"),
    ("github.com/me/sdlab", "-x", "not a branch name"),
    ("github.com/me/sdlab", "a b", "not a branch name"),
    ("github.com/me/sdlab", "feature/", "not a branch name"),
    ("github.com/me/sdlab", "x@{1}", "not a branch name"),
])
def test_malformed_address_or_branch_is_a_clear_error_and_writes_nothing(checkout, capsys, address, branch, says):
    before = contents(checkout)
    argv = ["colab", f"--repo={address}", "--root", str(checkout)] + ([f"--branch={branch}"] if branch else [])
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("sdlab colab: error:") and says in err, err
    assert contents(checkout) == before


def test_a_notebook_without_its_badge_stops_the_rewrite_before_any_file_is_written(checkout, capsys):
    path = checkout / "notebooks" / NOTEBOOKS[-1].name
    nb = json.loads(path.read_text())
    nb["cells"][0]["source"] = [line for line in nb["cells"][0]["source"] if "colab-badge" not in line]
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    before = contents(checkout)
    assert cli.main(["colab", "--repo", "github.com/me/fork", "--root", str(checkout)]) == 2
    err = capsys.readouterr().err
    assert path.name in err and "badge" in err
    assert contents(checkout) == before


def test_extras_and_indent_of_the_install_line_are_kept():
    text = (REPO / "notebooks" / NOTEBOOKS[0].name).read_text().replace('"sdlab @ git+', '"sdlab[notebooks] @ git+')
    out = rewritten(text, NOTEBOOKS[0].name, Repo("me", "fork", "dev"))
    assert '    %pip install -q \\"sdlab[notebooks] @ git+https://github.com/me/fork@dev\\"' in out
