"""The Colab path, followed as far as it goes without Colab or a network.

A fresh virtual environment plays Colab: it has a `google.colab` module (so the setup cell's `try: import
google.colab` takes the install branch) and sees the project environment's dependencies (torch, diffusers, ...)
through a .pth file, as Colab has torch preinstalled; sdlab itself is hidden from it. Notebook 00, as committed
at HEAD, runs there under papermill, and its own setup cell installs sdlab with its `%pip install` line,
unchanged: git rewrites the configured GitHub address to a local repository holding the committed HEAD's files
(`url.<file URL>.insteadOf`), so pip clones, builds and installs a non-editable sdlab from a git URL exactly as
in Colab. pip runs with `PIP_NO_INDEX=1`: if it wanted to download anything (a missing dependency, a build
requirement) the install would fail, so it downloads nothing. Build isolation is off (`PIP_NO_BUILD_ISOLATION=0`,
pip's inverted spelling), because the isolated build environment would fetch setuptools from PyPI; the wheel is
built by the same setuptools backend either way.

What is committed is what is tested: uncommitted changes do not reach the clone. The clone is HEAD's tree
(`git archive`) committed afresh rather than `git clone`: a shallow checkout (as CI makes) cloned again stays
shallow, and pip's partial clone (`--filter=blob:none`) of a shallow repository makes git fetch missing objects
without end.
"""

import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from sdlab.colab import read_config
from sdlab.figures import check_executed

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = "00_toy_world.ipynb"
KERNEL = "sdlab-colab"
HIDDEN = re.compile(r"sdlab([-.].*)?|__editable__.*sdlab.*|.*\.pth")
"""Entries of the project's site-packages the fake Colab must not see: sdlab itself and .pth hooks."""


def run(cmd, env=None, cwd=None, timeout=600) -> str:
    done = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def committed_repo(dest: Path) -> str:
    """HEAD's files as a one-commit repository at `dest`, on the branch the setup cell names; its commit id."""
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", "HEAD"], capture_output=True)
    assert archive.returncode == 0, f"the Colab test installs the committed HEAD; git archive failed: {archive.stderr}"
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    git = ["git", "-C", dest, "-c", "user.name=sdlab test", "-c", "user.email=test@localhost", "-c", "commit.gpgsign=false"]
    run(git + ["init", "-q", "-b", read_config(dest).branch])
    run(git + ["add", "-A", "-f"])
    run(git + ["commit", "-q", "-m", "HEAD's tree"])
    tree = run(["git", "-C", REPO, "rev-parse", "HEAD^{tree}"])
    assert run(git + ["rev-parse", "HEAD^{tree}"]) == tree, "the repository's files differ from the committed HEAD"
    return run(git + ["rev-parse", "HEAD"]).strip()


def fake_colab(venv: Path) -> tuple[Path, Path]:
    """A fresh virtual environment with `google.colab`, the project environment's packages less sdlab (through
    a .pth file) and a Jupyter kernel of its own; its python and site-packages."""
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    deps = venv / "project-deps"
    deps.mkdir()
    for folder in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for entry in Path(folder).iterdir():
            if not HIDDEN.fullmatch(entry.name) and not (deps / entry.name).exists():
                (deps / entry.name).symlink_to(entry)
    (site / "project-deps.pth").write_text(f"{deps}\n")
    (site / "google" / "colab").mkdir(parents=True)
    (site / "google" / "colab" / "__init__.py").write_text('"""Stands in for Colab\'s module."""\n')
    kernel = venv / "share" / "jupyter" / "kernels" / KERNEL
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fake Colab", "language": "python"}))
    return python, site


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """Notebook 00 of the committed HEAD, run in the fake Colab; what the tests look at."""
    tmp = tmp_path_factory.mktemp("colab")
    origin = tmp / "origin"
    head = committed_repo(origin)
    repo = read_config(origin)
    python, site = fake_colab(tmp / "venv")
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME") and not k.startswith(("PIP_", "GIT_"))}
    env.update({
        "PATH": f"{python.parent}{os.pathsep}{env.get('PATH', '')}", "PYTHONNOUSERSITE": "1",
        "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"url.{origin.as_uri()}.insteadOf",
        "GIT_CONFIG_VALUE_0": repo.url, "SDLAB_FIGURES_DIR": str(tmp / "figures"),
    })
    content = tmp / "content"  # the working directory, as /content in Colab (not the checkout: no sdlab there)
    content.mkdir()
    probe = "import importlib.util as u; print(u.find_spec('sdlab'), u.find_spec('torch') is not None)"
    before = run([python, "-c", probe], env=env, cwd=content)
    assert before.split() == ["None", "True"], f"the fake Colab must see torch but not sdlab before the install: {before}"
    executed = tmp / NOTEBOOK
    run([python, "-m", "papermill", origin / "notebooks" / NOTEBOOK, executed, "-k", KERNEL, "--cwd", content,
         "--no-progress-bar", "-p", "N_EVAL", "20", "-p", "FIGURES", tmp / "figures"], env=env)
    return dict(tmp=tmp, origin=origin, repo=repo, head=head, python=python, site=site, env=env, content=content,
                executed=executed)


def test_setup_cell_installs_the_committed_head_from_git(colab):
    cell = next(c for c in json.loads(colab["executed"].read_text())["cells"] if c["cell_type"] == "code")
    assert colab["repo"].install_line("    ") in "".join(cell["source"]).splitlines()  # the cell that ran
    records = list(colab["site"].glob("sdlab-*.dist-info/direct_url.json"))
    assert len(records) == 1, f"the setup cell did not install sdlab into the fresh environment: {records}"
    installed = json.loads(records[0].read_text())
    assert installed["url"] == colab["repo"].url
    assert installed["vcs_info"]["vcs"] == "git" and installed["vcs_info"]["commit_id"] == colab["head"]
    assert not installed.get("dir_info", {}).get("editable")


def test_the_notebook_runs_to_the_end_and_reads_as_a_report(colab):
    images, problems = check_executed(colab["executed"])
    assert not problems and images > 0, problems
    assert list((colab["tmp"] / "figures").glob("00_*.png")), "the notebook saved no figure"


def test_the_installed_copy_finds_the_shipped_model(colab):
    script = (
        "import json, torch, sdlab\n"
        "from sdlab.models import TOY_MODEL_DIR\n"
        "pipe = sdlab.load_pipeline(device='cpu')\n"
        "image = pipe('a red cat on grass', num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]\n"
        "print(json.dumps({'sdlab': sdlab.__file__, 'weights': str(TOY_MODEL_DIR), 'size': image.size}))\n"
    )
    found = json.loads(run([colab["python"], "-c", script], env=colab["env"], cwd=colab["content"]).strip().splitlines()[-1])
    site = colab["site"]
    assert Path(found["sdlab"]).is_relative_to(site) and Path(found["weights"]).is_relative_to(site), found
    assert found["size"] == [64, 64]
    committed = run(["git", "-C", colab["origin"], "ls-files", "sdlab/toymodel/weights"]).split()
    shipped = sorted(str(Path("sdlab/toymodel/weights") / p.relative_to(found["weights"]))
                     for p in Path(found["weights"]).rglob("*") if p.is_file())
    assert shipped == sorted(committed), "the installed package's weights differ from the committed ones"
