"""End to end in a real browser: `streamlit run app.py` headless, driven by Playwright in
Debian's Chromium, waiting for the app to go idle as Streamlit's own e2e tests do.

Screenshots land in test-artifacts/screenshots/. Under CI a missing Chromium fails.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from lympho.data import load_cohort
from lympho.synthetic import demo_cohort_dir

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "test-artifacts" / "screenshots"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "Debian's chromium is not installed (apt-get install chromium; .ci/run does it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The dashboard on a free loopback port, on the demo cohort, with its own cache."""
    cache = tmp_path_factory.mktemp("browser-cache")
    demo_cohort_dir(cache)
    port = free_port()
    env = {**os.environ, "LYMPHO_CACHE": str(cache), "TORCH_HOME": str(cache / "torch")}
    env.pop("LYMPHO_DATA", None)
    process = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                                "--server.address", "127.0.0.1", "--server.headless", "true",
                                "--browser.gatherUsageStats", "false"],
                               cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.3)
    else:
        process.kill()
        pytest.fail(f"streamlit did not start: {process.stderr.read().decode()[-2000:]}")
    yield {"url": url, "cache": cache}
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(60_000)
        yield context.new_page()
        browser.close()


def wait_for_idle(page, timeout: float = 120_000) -> None:
    """Connected, and the script not running: Streamlit's e2e definition of an idle app."""
    page.wait_for_selector("[data-testid='stApp'][data-test-connection-state='CONNECTED']", timeout=timeout)
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout)
    page.wait_for_timeout(300)  # let the last delta render


def visit(page, url: str, name: str) -> None:
    page.goto(url)
    wait_for_idle(page)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    assert page.locator("[data-testid='stException']").count() == 0, f"exception on {name}"


def test_every_page_renders(server, page):
    SHOTS.mkdir(parents=True, exist_ok=True)
    visit(page, server["url"], "data")
    assert page.get_by_text("SYNTHETIC DEMO COHORT").first.is_visible()
    assert page.get_by_text("Patients by gender and diagnosis").first.is_visible()
    for name in ("experiment", "ablation", "score", "runs"):
        visit(page, f"{server['url']}/{name}", name)


def test_run_a_small_experiment(server, page):
    page.goto(f"{server['url']}/experiment")
    wait_for_idle(page)
    page.get_by_role("button", name="Run experiment").click()
    page.get_by_text("Stored as run").wait_for(timeout=120_000)
    wait_for_idle(page)
    assert page.get_by_text("Balanced accuracy").first.is_visible()
    page.screenshot(path=str(SHOTS / "experiment-result.png"), full_page=True)
    visit(page, f"{server['url']}/runs", "runs-after-experiment")
    assert page.get_by_text("Comparison of 1 run").is_visible()


def test_score_an_uploaded_patient(server, page):
    page.goto(f"{server['url']}/score")
    wait_for_idle(page)
    page.get_by_role("button", name="Train the recommended model").click()
    page.get_by_text("trained on the synthetic demo cohort").wait_for(timeout=120_000)
    wait_for_idle(page)
    images = list(load_cohort(demo_cohort_dir(server["cache"])).select("test")[0].images)
    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files([str(p) for p in images])
    page.get_by_text(images[0].name).first.wait_for()
    page.get_by_role("button", name="Score").click()
    page.get_by_text("Probability of malignancy", exact=True).wait_for(timeout=60_000)
    wait_for_idle(page)
    download = page.locator("[data-testid='stDownloadButton']")
    download.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "score-result.png"))
    assert "Download the one-page report" in download.inner_text()
    assert page.get_by_text("Cells ordered by").count() == 0  # a clinical model: no cell ranking


def test_a_bad_upload_is_refused_on_the_page(server, page, tmp_path):
    fake = tmp_path / "cell.jpg"
    fake.write_text("not an image")
    page.goto(f"{server['url']}/score")
    wait_for_idle(page)
    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files([str(fake)])
    page.get_by_text("cell.jpg").first.wait_for()
    page.get_by_role("button", name="Score").click()
    wait_for_idle(page)
    error = page.locator("[data-testid='stAlertContentError']")
    error.first.wait_for()
    assert "cell.jpg" in error.first.inner_text()
    assert page.get_by_text("Probability of malignancy", exact=True).count() == 0
    page.screenshot(path=str(SHOTS / "score-refused.png"))
