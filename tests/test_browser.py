"""The explorer notebook in a real browser: JupyterLab on 127.0.0.1, headless Chromium driven by Selenium.

The test runs every cell of a copy of notebooks/07_explorer.ipynb (JupyterLab autosaves what it runs, and the
committed notebook stays clean; the copy gets `STEPS = 8` after its parameters cell, as papermill would), types
a new target prompt into the edit explorer, then moves its seed slider, and checks each time that the picture
the page shows changed (the <img> source and its pixels), that the explorer shows no error, and that no cell
wrote an error or a failure on stderr. Screenshots and the phases' times go to build/browser/. The server and
its kernel are stopped whatever happens.

It needs Debian's `chromium` and `chromium-driver` and Selenium in the venv: `make test-deps` installs them
(`make test` runs it first). Without them the test fails and says so; it never downloads a browser.
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = "notebooks/07_explorer.ipynb"
SHOTS = REPO / "build" / "browser"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
INSTALL = ("run `make test-deps`, or install them yourself: `apt-get install chromium chromium-driver` "
           "(Debian) and `.venv/bin/pip install selenium`")
EDIT = ".sdlab-edit-explorer"
NEW_TARGET = "a red bird on grass"
PARAMETERS = "STEPS = 8  # injected by tests/test_browser.py, as papermill would: fewer steps, a faster test\n"


def require_browser():
    missing = [name for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER))
               if not os.access(path, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (Python package)")
    if missing:
        pytest.fail(f"the browser test needs {', '.join(missing)}: {INSTALL}", pytrace=False)


@pytest.fixture
def browser():
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,2600", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(process: subprocess.Popen, base: str, token: str) -> None:
    """Shut the server down (its kernels too) through its API, then end its process group, and any child still
    alive (kernels run in sessions of their own)."""
    import psutil

    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    try:
        request = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
        urllib.request.urlopen(request, timeout=5)
        process.wait(15)
    except Exception:  # noqa: BLE001 - whatever failed here, the signals below end it
        pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process.poll() is None:
            try:
                os.killpg(process.pid, sig)
                process.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture
def lab(tmp_path):
    """JupyterLab serving a copy of the explorer notebook; yields the notebook's URL (with the token)."""
    root = tmp_path / "lab"
    (root / "notebooks").mkdir(parents=True)
    notebook = json.loads((REPO / NOTEBOOK).read_text())
    cells = notebook["cells"]
    at = next(i for i, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", []))
    cells.insert(at + 1, {"cell_type": "code", "execution_count": None, "id": "injected-parameters",
                          "metadata": {"tags": ["injected-parameters"]}, "outputs": [], "source": PARAMETERS})
    (root / NOTEBOOK).write_text(json.dumps(notebook))
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, SDLAB_FIGURES_DIR=str(tmp_path / "figures"), JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"))
    log = tmp_path / "jupyterlab.log"
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True", "--allow-root"]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root,
                                   start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"JupyterLab exited with {process.returncode}:\n{log.read_text()[-3000:]}", pytrace=False)
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer in 120 s:\n{log.read_text()[-3000:]}", pytrace=False)
                time.sleep(0.3)
        yield f"{base}/lab/tree/{NOTEBOOK}?token={token}"
    finally:
        stop(process, base, token)


STATE = """
const app = window.jupyterapp;
const panel = app && app.shell.currentWidget;
if (!panel || !panel.sessionContext || !panel.content || !panel.content.widgets) return null;
const session = panel.sessionContext.session;
const cells = panel.content.widgets.filter(cell => cell.model.type === 'code');
return {
  kernel: session && session.kernel ? session.kernel.status : null,
  counts: cells.map(cell => cell.model.executionCount),
  outputs: cells.map(cell => cell.model.toJSON().outputs),
};
"""


def wait_for(what: str, check, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def problems(state) -> list[str]:
    """Error outputs of the cells, and stderr that reports a failure (a traceback, an exception in a thread)."""
    found = []
    for index, outputs in enumerate(state["outputs"]):
        for output in outputs:
            text = output.get("text", "")
            text = "".join(text) if isinstance(text, list) else text
            if output.get("output_type") == "error":
                found.append(f"code cell {index}: {output.get('ename')}: {output.get('evalue')}")
            elif output.get("name") == "stderr" and any(k in text for k in ("Traceback", "Error", "Exception")):
                found.append(f"code cell {index} stderr: {text[-500:]}")
    return found


def pixels(element):
    import io

    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(element.screenshot_as_png)).convert("RGB"))


def changed_image(driver, before_src, before_pixels, what):
    from selenium.webdriver.common.by import By

    def new_src():
        src = driver.find_element(By.CSS_SELECTOR, f"{EDIT} img.sdlab-image").get_attribute("src")
        return src if src and src != before_src else None

    src = wait_for(f"the edit explorer's picture to change after {what}", new_src)
    image = driver.find_element(By.CSS_SELECTOR, f"{EDIT} img.sdlab-image")
    after = pixels(image)
    assert after.shape != before_pixels.shape or (after != before_pixels).any(), f"same pixels after {what}"
    errors = [e.text for e in driver.find_elements(By.CSS_SELECTOR, f"{EDIT} .sdlab-error")]
    assert not errors, f"the edit explorer shows an error after {what}: {errors}"
    return src, after


def test_explorer_notebook_runs_and_follows_a_typed_prompt_and_a_slider(browser, lab):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = browser
    SHOTS.mkdir(parents=True, exist_ok=True)
    start, seconds = time.monotonic(), {}
    try:
        driver.get(lab)
        wait_for("the notebook and an idle kernel", lambda: (driver.execute_script(STATE) or {}).get("kernel") == "idle")
        seconds["notebook open, kernel idle"] = time.monotonic() - start
        driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")

        def ran():
            state = driver.execute_script(STATE)
            done = state and state["kernel"] == "idle" and all(c is not None for c in state["counts"])
            return state if done else None

        state = wait_for("every cell to run", ran, timeout=180)
        (SHOTS / "outputs.json").write_text(json.dumps(state["outputs"], indent=1)[:200_000])
        assert not problems(state), problems(state)
        image = wait_for("the edit explorer's picture",
                         lambda: driver.find_elements(By.CSS_SELECTOR, f"{EDIT} img.sdlab-image[src]"))[0]
        src, before = image.get_attribute("src"), pixels(image)
        seconds["every cell ran"] = time.monotonic() - start
        driver.save_screenshot(str(SHOTS / "1-ran.png"))

        target = driver.find_element(By.CSS_SELECTOR, f"{EDIT} .sdlab-target input")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].select()", target)
        target.send_keys(NEW_TARGET + Keys.ENTER)
        src, before = changed_image(driver, src, before, f"typing {NEW_TARGET!r}")
        seconds["picture after typing"] = time.monotonic() - start
        driver.save_screenshot(str(SHOTS / "2-typed.png"))

        slider = driver.find_element(By.CSS_SELECTOR, f"{EDIT} .sdlab-seed")
        readout = slider.find_element(By.CSS_SELECTOR, ".widget-readout").text
        handle = slider.find_element(By.CSS_SELECTOR, ".noUi-handle")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", handle)
        ActionChains(driver).drag_and_drop_by_offset(handle, 40, 0).perform()
        assert slider.find_element(By.CSS_SELECTOR, ".widget-readout").text != readout, "the slider did not move"
        changed_image(driver, src, before, "moving the seed slider")
        seconds["picture after the slider"] = time.monotonic() - start
        driver.save_screenshot(str(SHOTS / "3-slider.png"))

        state = driver.execute_script(STATE)
        assert not problems(state), problems(state)
    finally:
        driver.save_screenshot(str(SHOTS / "last.png"))
        (SHOTS / "seconds.json").write_text(json.dumps({k: round(v, 1) for k, v in seconds.items()}, indent=1))
