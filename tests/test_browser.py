"""JupyterLab in a real browser: notebook 00 runs through the UI in headless Chromium.

The test starts JupyterLab on a free localhost port (smoke profile, offline, results in a
temporary folder), opens a fresh copy of notebooks/00_orientation.ipynb (outputs cleared) in
Debian's Chromium driven by Selenium, clicks Run > Run All Cells, waits until every code cell
has an execution count, and checks that no cell shows an error and that a figure rendered.
A screenshot goes to the test's temporary folder, and to ``$COURSE_ARTIFACTS`` when set.

Chromium comes from the system (``apt-get install chromium chromium-driver``; `.ci/run` does
this), never from a browser download: Selenium gets the driver's path, so Selenium Manager
never runs. Without Chromium, chromedriver or Selenium the test is skipped and says why, unless
``COURSE_REQUIRE_BROWSER=1`` (set by `.ci/run` where it could install Chromium): then it fails.

    python -m pytest -m browser -s tests/test_browser.py
"""
from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "00_orientation.ipynb"
CHROMIUM = os.environ.get("COURSE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("COURSE_CHROMEDRIVER", "/usr/bin/chromedriver")
SERVER_START_S = 120      # JupyterLab start-up on 2 busy cores
OPEN_S = 120              # page load, notebook render and kernel start
NOTEBOOK_RUN_S = 240      # notebook 00 needs ~10-25 s in smoke; leave room for a loaded machine
SAVE_S = 60
IMAGE_SELECTOR = ".jp-OutputArea-output img"
# JupyterLab renders an error output like stderr text; its traceback gives it away.
TRACEBACK = "Traceback (most recent call last)"
PROBE = "error_probe.ipynb"  # a negative control: proves the error check sees errors

pytestmark = pytest.mark.browser


def _missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    for path, what in [(CHROMIUM, "Chromium"), (CHROMEDRIVER, "chromedriver")]:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return (f"{what} not found at {path}: install Debian's `chromium chromium-driver` "
                    "(`.ci/run` does) to run the JupyterLab browser test")
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed: `pip install -e '.[dev]'`"
    if shutil.which("jupyter-lab", path=os.path.dirname(sys.executable)) is None \
            and shutil.which("jupyter-lab") is None:
        return "jupyter-lab is not installed: `pip install -e '.[dev]'`"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text[-lines:])


class Lab:
    """A JupyterLab server in its own process, with its log in a file."""

    def __init__(self, root_dir: Path, home: Path):
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.log = home / "jupyterlab.log"
        settings = home / "lab-settings"
        # Render every cell (no virtual scrolling), so all outputs are in the DOM to inspect.
        tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
        tracker.parent.mkdir(parents=True)
        tracker.write_text(json.dumps({"windowingMode": "none"}))
        # No news/update checks: this machine is offline and a pop-up would cover the page.
        news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        news.parent.mkdir(parents=True)
        news.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        env = dict(os.environ)
        env.update(
            COURSE_PROFILE="smoke",
            COURSE_OFFLINE="1",
            COURSE_RESULTS=str(home / "results"),
            JUPYTERLAB_SETTINGS_DIR=str(settings),
            JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
            JUPYTER_RUNTIME_DIR=str(home / "runtime"),
            JUPYTER_CONFIG_DIR=str(home / "config"),
            MPLCONFIGDIR=str(home / "mpl"),
        )
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser",
               "--ip=127.0.0.1", f"--port={self.port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root_dir}",
               "--allow-root", "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        self._log_file = open(self.log, "w")
        self.proc = subprocess.Popen(cmd, cwd=root_dir, env=env, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}?token={self.token}"

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with code {self.proc.returncode}:\n{_tail(self.log)}")
            try:
                with urllib.request.urlopen(self.url("api/status"), timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        pytest.fail(f"JupyterLab did not answer within {timeout:.0f} s:\n{_tail(self.log)}")

    def kernel(self, notebook: str) -> dict:
        """The server's view of the notebook's kernel: execution_state and open connections."""
        try:
            with urllib.request.urlopen(self.url("api/sessions"), timeout=5) as r:
                sessions = json.load(r)
        except OSError:
            return {}
        return next((s["kernel"] for s in sessions if s.get("path") == notebook), {})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self._log_file.close()


def _fresh_copy(src, dest: Path) -> int:
    """Write ``src`` (a path or a notebook) to ``dest`` without outputs; return its code cells."""
    nb = nbformat.read(src, as_version=4) if isinstance(src, Path) else src
    for cell in nb.cells:  # whatever shows up afterwards came from this run
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("jupyter", None)  # show hidden solutions: every cell gets a prompt
    nbformat.write(nb, dest)
    return sum(c.cell_type == "code" for c in nb.cells)


def _probe_notebook():
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("import sys\nprint('a warning on stderr is no error', file=sys.stderr)"),
                nbformat.v4.new_code_cell("1 / 0"),
                nbformat.v4.new_code_cell("'never reached'")]
    return nb


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    reason = _missing()
    if reason and os.environ.get("COURSE_REQUIRE_BROWSER") == "1":  # set by .ci/run
        pytest.fail(f"COURSE_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    if reason:
        pytest.skip(reason)
    home = tmp_path_factory.mktemp("jupyterlab")
    work = home / "notebooks"
    work.mkdir()
    server = Lab(work, home)
    server.code_cells = {NOTEBOOK.name: _fresh_copy(NOTEBOOK, work / NOTEBOOK.name),
                         PROBE: _fresh_copy(_probe_notebook(), work / PROBE)}
    server.work = work
    try:
        server.wait_ready(SERVER_START_S)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(lab, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    home = tmp_path_factory.mktemp("chromium")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never download
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--no-default-browser-check",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-extensions", "--window-size=1400,1000",
                 f"--user-data-dir={home / 'profile'}"]:
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(home / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(OPEN_S)
    try:
        yield driver
    finally:
        driver.quit()


def _cell_state(driver) -> dict:
    """Execution prompts, tracebacks and rendered images of the notebook on screen."""
    return driver.execute_script("""
        const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
        if (!panel) return {prompts: [], errors: [], images: 0, busy: null};
        const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
            .map(p => p.textContent.trim());
        const errors = [...panel.querySelectorAll('.jp-OutputArea-output')]
            .map(e => e.textContent).filter(t => t.includes(arguments[0]))
            .map(t => t.slice(0, 2000));
        const kernel = panel.querySelector('.jp-Notebook-ExecutionIndicator');
        return {prompts: prompts, errors: errors,
                images: [...panel.querySelectorAll(arguments[1])]
                    .filter(i => i.complete && i.naturalWidth > 0).length,  // decoded, not broken
                busy: kernel ? kernel.getAttribute('data-status') : null};
    """, TRACEBACK, IMAGE_SELECTOR)


def _ran(prompt: str) -> bool:
    return prompt.strip("[]: ").isdigit()


def run_all_cells(lab: Lab, driver, name: str, out: Path) -> dict:
    """Open notebook ``name``, click Run > Run All Cells, wait, save it (Ctrl+S), screenshot.

    Returns the final page state plus ``saved_errors`` (error outputs in the saved file) and
    timings. Fails with the last JupyterLab log lines if a step does not happen in time.
    """
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    stem = Path(name).stem
    state: dict = {}

    def fail(msg: str) -> None:
        shot = out / f"{stem}_failure.png"
        driver.save_screenshot(str(shot))
        pytest.fail(f"{name}: {msg}\nscreenshot: {shot}\n"
                    f"--- last JupyterLab log lines ---\n{_tail(lab.log)}", pytrace=False)

    n_code = lab.code_cells[name]
    start = time.monotonic()
    driver.get(lab.url(f"lab/tree/{name}"))
    try:
        WebDriverWait(driver, OPEN_S).until(lambda d: len(_cell_state(d)["prompts"]) == n_code)
        # The browser's websocket to the kernel is open and the kernel idle: a click before
        # that can queue the run on a kernel that is still connecting, and nothing runs.
        WebDriverWait(driver, OPEN_S, poll_frequency=1).until(lambda d: (
            lambda k: k.get("connections", 0) >= 1 and k.get("execution_state") == "idle")(
                lab.kernel(name)))
        WebDriverWait(driver, 30).until(lambda d: _cell_state(d)["busy"] == "idle")
    except TimeoutException:
        state = _cell_state(driver)
        fail(f"JupyterLab did not show the notebook's {n_code} code cells with a connected, idle "
             f"kernel within {OPEN_S} s (cells on the page: {len(state['prompts'])}, "
             f"kernel: {lab.kernel(name) or 'none'})")
    opened = time.monotonic() - start

    # Run > Run All Cells, through the menu bar as a learner would.
    try:
        WebDriverWait(driver, 30).until(EC.element_to_be_clickable(
            (By.XPATH, "//li[contains(@class,'lm-MenuBar-item')][.//div[normalize-space()='Run']]"))
        ).click()
        WebDriverWait(driver, 30).until(EC.element_to_be_clickable(
            (By.XPATH, "//li[contains(@class,'lm-Menu-item')]"
                       "[.//div[contains(@class,'lm-Menu-itemLabel')][normalize-space()='Run All Cells']]"))
        ).click()
    except TimeoutException:
        fail("could not click Run > Run All Cells")
    clicked = time.monotonic()

    # Done when the kernel is idle and no cell is queued ([*]), twice in a row: either every
    # cell ran, or a cell failed and JupyterLab stopped there.
    settled = 0

    def done(d) -> bool:
        nonlocal state, settled
        state = _cell_state(d)
        prompts = state["prompts"]
        quiet = (state["busy"] == "idle" and prompts and "[*]:" not in prompts
                 and any(_ran(p) for p in prompts))
        settled = settled + 1 if quiet else 0
        return settled >= 2

    try:
        WebDriverWait(driver, NOTEBOOK_RUN_S, poll_frequency=1).until(done)
    except TimeoutException:
        fail(f"did not finish within {NOTEBOOK_RUN_S} s; prompts: {state.get('prompts')}")
    run_s = time.monotonic() - clicked

    # Save through the UI and read the file back: error outputs there are unambiguous.
    path = lab.work / name
    ActionChains(driver).key_down(Keys.CONTROL).send_keys("s").key_up(Keys.CONTROL).perform()
    want = sum(_ran(p) for p in state["prompts"])
    saved = None
    deadline = time.monotonic() + SAVE_S
    while time.monotonic() < deadline:
        try:
            saved = nbformat.read(path, as_version=4)
        except Exception:  # noqa: BLE001  (caught mid-write: read again)
            saved = None
        if saved and sum(c.get("execution_count") is not None
                         for c in saved.cells if c.cell_type == "code") == want:
            break
        time.sleep(0.5)
    else:
        fail(f"Ctrl+S did not save the run's {want} execution counts to {path} within {SAVE_S} s")
    state["saved_errors"] = [f"{o.ename}: {o.evalue}" for c in saved.cells if c.cell_type == "code"
                             for o in c.outputs if o.output_type == "error"]

    # Screenshot with the last figure in view.
    driver.execute_script("""
        const imgs = document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) ' + arguments[0]);
        if (imgs.length) imgs[imgs.length - 1].scrollIntoView({block: 'center'});
    """, IMAGE_SELECTOR)
    time.sleep(1)
    shot = out / f"{stem}_jupyterlab.png"
    driver.save_screenshot(str(shot))
    if os.environ.get("COURSE_ARTIFACTS"):
        artifacts = Path(os.environ["COURSE_ARTIFACTS"])
        artifacts.mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, artifacts / shot.name)
    state.update(open_s=opened, run_s=run_s, screenshot=shot)
    print(f"\n{name}: open with idle kernel after {opened:.1f} s, Run All Cells took {run_s:.1f} s, "
          f"{len(state['prompts'])} code cells, {state['images']} images; screenshot {shot}")
    return state


def test_notebook_00_runs_in_jupyterlab(lab, browser, tmp_path):
    state = run_all_cells(lab, browser, NOTEBOOK.name, tmp_path)
    assert not state["errors"], "a cell shows an error:\n" + "\n---\n".join(state["errors"])
    assert not state["saved_errors"], f"error outputs in the saved notebook: {state['saved_errors']}"
    not_run = [i for i, p in enumerate(state["prompts"]) if not _ran(p)]
    assert not not_run, f"code cells {not_run} did not run (prompts {state['prompts']})"
    assert state["images"] >= 1, "no figure rendered in any output area"
    assert state["screenshot"].stat().st_size > 10_000, "the screenshot is (nearly) empty"


def test_the_error_check_sees_a_failing_cell(lab, browser, tmp_path):
    """Negative control: the same checks do see an error, and the cells after it do not run."""
    state = run_all_cells(lab, browser, PROBE, tmp_path)
    assert len(state["errors"]) == 1 and "ZeroDivisionError" in state["errors"][0], state["errors"]
    assert state["saved_errors"] == ["ZeroDivisionError: division by zero"], state["saved_errors"]
    assert [_ran(p) for p in state["prompts"]] == [True, True, False], state["prompts"]
