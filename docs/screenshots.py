"""Regenerate the dashboard screenshots in docs/images/ (the README's and docs/dashboard.md's).

    .venv/bin/python docs/screenshots.py            # every page
    .venv/bin/python docs/screenshots.py score runs # only these

Starts ``streamlit run app.py`` headless on a free loopback port with a fresh temporary
LYMPHO_CACHE, so the pages show the synthetic demo cohort and never a real patient (an
inherited LYMPHO_DATA is dropped). Two clinical runs are stored first, so the Runs page has
something to show. Each page is opened in Debian's Chromium through Playwright (as
tests/test_browser.py does: ``apt-get install chromium``), the script waits for the app's idle
state (connected, script not running) and saves a 1280 x 800 PNG of what the window shows.
The Score page is shot as its form: no model is trained here.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "docs" / "images"
VIEWPORT = {"width": 1280, "height": 800}
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: File name -> the page's URL path.
PAGES = {"overview": "", "data": "data", "experiment": "experiment", "score": "score",
         "ablation": "ablation", "runs": "runs"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        sys.exit("Debian's chromium is not installed (apt-get install chromium)")
    return path


def prepare(cache: Path) -> None:
    """The demo cohort generated into ``cache`` and two stored runs on it."""
    sys.path.insert(0, str(REPO))
    from lympho.data import load_cohort
    from lympho.experiment import ExperimentConfig, run_experiment
    from lympho.runstore import RunStore
    from lympho.synthetic import demo_cohort_dir

    demo = load_cohort(demo_cohort_dir(cache), synthetic=True)
    for classifier in ("logreg", "xgboost"):
        RunStore(cache / "runs").save(run_experiment(demo, ExperimentConfig(features="clinical",
                                                                             classifier=classifier, repeats=2)))


def start(cache: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "LYMPHO_CACHE": str(cache), "TORCH_HOME": str(cache / "torch")}
    env.pop("LYMPHO_DATA", None)
    process = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                                "--server.address", "127.0.0.1", "--server.headless", "true",
                                "--browser.gatherUsageStats", "false"],
                               cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    sys.exit(f"streamlit did not start: {process.stderr.read().decode()[-2000:]}")


def wait_for_idle(page, timeout: float = 180_000) -> None:
    """Connected, and the script not running: Streamlit's e2e definition of an idle app."""
    page.wait_for_selector("[data-testid='stApp'][data-test-connection-state='CONNECTED']", timeout=timeout)
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout)
    page.wait_for_timeout(1500)  # let the last delta and the charts render


def shoot(url: str, names: list[str]) -> None:
    from playwright.sync_api import sync_playwright

    IMAGES.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        page = browser.new_context(viewport=VIEWPORT).new_page()
        page.set_default_timeout(180_000)
        page.goto(url)  # the first visit starts the cohort's loading and the background imports
        wait_for_idle(page)
        page.get_by_text("SYNTHETIC DEMO COHORT").first.wait_for()
        for name in names:
            page.goto(f"{url}/{PAGES[name]}")
            wait_for_idle(page)
            if page.locator("[data-testid='stException']").count():
                raise SystemExit(f"the {name} page shows an exception; no screenshot taken")
            path = IMAGES / f"{name}.png"
            page.screenshot(path=str(path))
            print(f"{path.relative_to(REPO)}: {path.stat().st_size / 1024:.0f} KB")
        browser.close()


def main(argv: list[str]) -> None:
    names = argv or list(PAGES)
    unknown = sorted(set(names) - set(PAGES))
    if unknown:
        sys.exit(f"unknown page(s) {', '.join(unknown)}; pages: {', '.join(PAGES)}")
    with tempfile.TemporaryDirectory(prefix="lympho-screenshots-") as tmp:
        cache = Path(tmp)
        prepare(cache)
        process = start(cache, free_port())
        try:
            shoot(f"http://127.0.0.1:{process.args[process.args.index('--server.port') + 1]}", names)
        finally:
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    main(sys.argv[1:])
