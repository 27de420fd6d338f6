"""End to end in a real browser: `streamlit run app.py` headless, driven by Playwright in
Debian's Chromium, waiting for the app to go idle as Streamlit's own e2e tests do.

Screenshots land in test-artifacts/screenshots/. Under CI a missing Chromium fails.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from lympho.data import load_cohort
from lympho.experiment import ExperimentConfig, run_experiment
from lympho.runstore import RunStore
from lympho.scoring import save_model, train_model
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


@contextmanager
def running_dashboard(cache: Path, startup_s: float):
    """``streamlit run app.py`` on a free loopback port with its own cache, until the block ends:
    yields the URL and the server process."""
    env = {**os.environ, "LYMPHO_CACHE": str(cache), "TORCH_HOME": str(cache / "torch")}
    env.pop("LYMPHO_DATA", None)
    url = f"http://127.0.0.1:{free_port()}"
    process = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py",
                                "--server.port", url.rsplit(":", 1)[1], "--server.address", "127.0.0.1",
                                "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                               cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + startup_s
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.3)
    else:
        process.kill()
        pytest.fail(f"streamlit did not start: {process.stderr.read().decode()[-2000:]}")
    try:
        yield url, process
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The dashboard on a free loopback port, on the demo cohort, with its own cache, two runs
    and the recommended model."""
    cache = tmp_path_factory.mktemp("browser-cache")
    demo = load_cohort(demo_cohort_dir(cache), synthetic=True)
    for classifier in ("logreg", "svm"):  # stored runs, so the Runs page has something to show
        RunStore(cache / "runs").save(run_experiment(demo, ExperimentConfig(features="clinical",
                                                                             classifier=classifier)))
    # the recommended model (late fusion with the morphology expert: its cell features are cached here for the
    # server), its threshold from 2 CV repeats instead of 10 to keep the test short
    save_model(train_model(demo, None, cache, threshold_repeats=2, outer_repeats=1, inner_repeats=2),
               cache / "models" / "recommended-demo")  # the recommended procedure, with small repeats
    with running_dashboard(cache, startup_s=60) as (url, _):
        yield {"url": url, "cache": cache}


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1280, "height": 720})
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
    shoot(page, name)


def shoot(page, name: str) -> None:
    """A screenshot of the whole page at the projector's width (1280 px), and no exception on
    the page. Streamlit scrolls inside its main block, so the window is made as tall as that
    block for the shot; ``name-viewport.png`` is what the 1280 x 720 projector shows first."""
    page.screenshot(path=str(SHOTS / f"{name}-viewport.png"))
    height = page.evaluate("Math.max(720, document.querySelector(\"[data-testid='stMain']\").scrollHeight)")
    page.set_viewport_size({"width": 1280, "height": min(int(height), 8000)})
    page.wait_for_timeout(400)
    page.screenshot(path=str(SHOTS / f"{name}.png"))
    page.set_viewport_size({"width": 1280, "height": 720})
    assert page.locator("[data-testid='stException']").count() == 0, f"exception on {name}"


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def test_every_page_renders(server, page):
    SHOTS.mkdir(parents=True, exist_ok=True)
    visit(page, server["url"], "overview")
    page.get_by_text("Labelled patients").wait_for()
    expect(page.get_by_text("SYNTHETIC DEMO COHORT").first).to_be_visible()
    page.get_by_text("Balanced accuracy against published results").first.wait_for()
    shoot(page, "overview")
    for name in ("data", "experiment", "ablation", "score", "runs"):
        visit(page, f"{server['url']}/{name}", name)


def test_experiment_form_and_run(server, page):
    page.goto(f"{server['url']}/experiment")
    wait_for_idle(page)
    encoder = page.get_by_label("Image encoder")
    assert encoder.is_enabled()  # the recommended model uses images (late fusion with morphology)
    page.get_by_role("combobox", name="Features", exact=True).click()
    page.get_by_role("option", name="Clinical only").click()
    wait_for_idle(page)
    expect(page.get_by_label("Image encoder")).to_be_disabled()  # at once, nothing to submit first
    page.get_by_role("combobox", name="Features", exact=True).click()
    page.get_by_role("option", name="Clinical + images").click()
    wait_for_idle(page)
    expect(page.get_by_label("Image encoder")).to_be_enabled()
    page.get_by_role("combobox", name="Features", exact=True).click()
    page.get_by_role("option", name="Clinical only").click()
    page.get_by_role("combobox", name="Classifier", exact=True).click()
    page.get_by_role("option", name="LogReg").click()
    wait_for_idle(page)
    page.get_by_role("button", name="Run experiment").click()
    page.get_by_text("Stored as run").wait_for(timeout=120_000)
    wait_for_idle(page)
    shoot(page, "experiment-result")
    page.get_by_role("link", name="Data").first.click()  # leave, and come back: the form is kept
    wait_for_idle(page)
    page.get_by_role("link", name="Experiment").first.click()
    wait_for_idle(page)
    expect(page.get_by_role("combobox", name="Classifier", exact=True)).to_have_value("LogReg")


def test_runs_tracker_links_and_tags(server, page):
    page.goto(f"{server['url']}/runs")
    wait_for_idle(page)
    page.get_by_text("Link to this run").wait_for()
    run_id = page.get_by_role("combobox", name="Run", exact=True).input_value().split(": ")[0]
    page.goto(f"{server['url']}/runs?compare={run_id}")
    wait_for_idle(page)
    expect(page.get_by_text("Comparison of 1 run")).to_be_visible()  # waits: the charts render after idle
    expect(page.get_by_text("ROC, out-of-fold").first).to_be_visible()
    page.get_by_text("Rename, tag, annotate or delete this run").click()
    page.get_by_label("Tags (space-separated)").fill("slides")
    page.get_by_role("button", name="Save").click()
    wait_for_idle(page)
    expect(page.get_by_text("tags: slides").first).to_be_visible(timeout=10_000)
    shoot(page, "runs-tracker")


def test_ablation_paper_table(server, page):
    page.goto(f"{server['url']}/ablation")
    wait_for_idle(page)
    page.get_by_text("Custom grid").click()  # its defaults: clinical features, two classifiers (fast)
    page.get_by_text("Feature sets").wait_for()
    wait_for_idle(page)
    page.get_by_role("button", name="Run ablation").click()
    page.get_by_text("stored as runs").wait_for(timeout=120_000)
    wait_for_idle(page)
    shoot(page, "ablation-result")
    expect(page.get_by_text("beside the report's Table 2")).to_be_visible()
    assert page.get_by_text("Report: SVM, clinical").count() + page.locator("canvas").count() > 0


def test_score_an_uploaded_patient(server, page):
    page.goto(f"{server['url']}/score")
    wait_for_idle(page)
    page.get_by_text("Model card").wait_for()
    expect(page.get_by_role("combobox", name="Model")).to_have_value(re.compile("recommended"))
    page.get_by_label("Patient ID").fill("P-042")
    images = list(load_cohort(demo_cohort_dir(server["cache"])).select("test")[0].images)
    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files([str(p) for p in images])
    page.get_by_text(f"Preview: {len(images)} of {len(images)} uploaded file(s)").wait_for()  # all on the server
    wait_for_idle(page)
    page.get_by_role("button", name="Score", exact=True).click()
    page.get_by_text("Probability of malignancy", exact=True).wait_for(timeout=60_000)
    wait_for_idle(page)
    expect(page.get_by_text("not a diagnosis").first).to_be_visible(timeout=30_000)  # beside the decision
    expect(page.get_by_text("Inputs as used").first).to_be_visible()
    expect(page.get_by_text("Each expert's probability").first).to_be_visible()  # why: clinical and image say
    expect(page.get_by_text("Patients scored alike").first).to_be_visible()  # what such a score meant in training
    assert page.get_by_text(f"not used by this clinical-only model").count() == 0  # the recommended model uses them
    shoot(page, "score-result")
    download = page.locator("[data-testid='stDownloadButton']")
    assert "Download the one-page report" in download.inner_text()
    assert page.get_by_text("Each cell scored on its own").count() == 1  # an image model: its cells ranked
    page.get_by_label("Lymphocyte count (×10⁹/L)").fill("55")
    page.get_by_label("Lymphocyte count (×10⁹/L)").press("Enter")
    wait_for_idle(page)
    expect(page.get_by_text("previous result was cleared")).to_be_visible(timeout=10_000)  # never stale


def test_a_bad_upload_is_refused_on_the_page(server, page, tmp_path):
    fake = tmp_path / "cell.jpg"
    fake.write_text("not an image")
    page.goto(f"{server['url']}/score")
    wait_for_idle(page)
    page.get_by_label("Patient ID").fill("P-043")
    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files([str(fake)])
    page.get_by_text("cell.jpg").first.wait_for()
    wait_for_idle(page)
    page.get_by_role("button", name="Score", exact=True).click()
    wait_for_idle(page)
    error = page.locator("[data-testid='stAlertContentError']")
    error.first.wait_for()
    assert "cell.jpg" in error.first.inner_text()
    assert page.get_by_text("Probability of malignancy", exact=True).count() == 0
    shoot(page, "score-refused")
