"""Dashboard speed in a real browser: the cold first load, each page's first render, and
scoring an uploaded patient.

0. Cold: a server on an empty cache; a browser opens the landing page: time to the overview's
   first idle state (text on screen), and to the demo cohort being generated and shown.
1. Starts `streamlit run app.py` headless on the demo cohort with a fresh cache and warms
   it (cohort loaded, a run stored, a resnet18-based model trained on the demo cohort).
2. Page renders: for each page, a new browser context (a new session) opens the page and
   the time to the app's idle state is recorded (warm cache: the second of two visits).
3. Scoring: a real patient's first 100 images are uploaded on "Score a patient" with the
   resnet18 model selected; the time from choosing the files to the result is recorded.

    python benchmarks/dashboard.py [--data DIR]
"""

import argparse
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
sys.path.insert(0, str(REPO))

from lympho.data import load_cohort, resolve_cohort  # noqa: E402
from lympho.experiment import ExperimentConfig, run_experiment  # noqa: E402
from lympho.runstore import RunStore  # noqa: E402
from lympho.scoring import save_model, train_model  # noqa: E402

PAGES = ("", "data", "experiment", "ablation", "score", "runs")  # "": the overview (landing page)
VIEWPORT = {"width": 1280, "height": 720}
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
IMAGE_MODEL = ExperimentConfig(features="both", weights="none", classifier="logreg")


def idle(page) -> None:
    page.wait_for_selector("[data-testid='stApp'][data-test-connection-state='CONNECTED']", timeout=120_000)
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=120_000)


def start_server(cache: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "LYMPHO_CACHE": str(cache)}
    env.pop("LYMPHO_DATA", None)
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                               "--server.address", "127.0.0.1"], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
            return server, url
        except OSError:
            time.sleep(0.3)
    server.kill()
    raise SystemExit("streamlit did not start")


def cold_start() -> None:
    """The first visit ever: empty cache, nothing imported, the demo cohort not generated yet."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as scratch:
        server, url = start_server(Path(scratch))
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
                page = browser.new_page(viewport=VIEWPORT)
                started = time.perf_counter()
                page.goto(url)
                page.get_by_text("Reactive or malignant lymphocytosis?").wait_for(timeout=120_000)
                shown = time.perf_counter() - started
                page.get_by_text("Labelled patients").wait_for(timeout=120_000)
                ready = time.perf_counter() - started
                browser.close()
        finally:
            server.terminate()
            server.wait(10)
    print(f"cold first load (empty cache, new server): overview on screen {shown:.2f} s, "
          f"demo cohort generated and shown {ready:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "lymphocytosis")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    patient = next(p for p in load_cohort(args.data, verify_images=False).patients if len(p.images) >= 100)
    cold_start()
    with tempfile.TemporaryDirectory() as scratch:
        cache = Path(scratch)
        demo = resolve_cohort(None, cache)
        RunStore(cache / "runs").save(run_experiment(demo, ExperimentConfig(features="clinical")))
        save_model(train_model(demo, IMAGE_MODEL, cache), cache / "models" / "resnet18-logreg")
        server, url = start_server(cache)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
                print(f"page first render on a warm cache (new session each), {os.cpu_count()} cores:")
                for name in PAGES:
                    for visit in range(2):
                        context = browser.new_context(viewport=VIEWPORT)
                        page = context.new_page()
                        started = time.perf_counter()
                        page.goto(f"{url}/{name}")
                        idle(page)
                        seconds = time.perf_counter() - started
                        context.close()
                    print(f"  {name or 'overview':10s} {seconds:.2f} s")
                page = browser.new_page(viewport=VIEWPORT)
                page.goto(f"{url}/score")
                idle(page)
                page.get_by_label("Patient ID").fill(patient.id)
                started = time.perf_counter()
                page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(
                    [str(p) for p in patient.images[:100]])
                page.get_by_text(patient.images[99].name).first.wait_for(timeout=120_000)
                idle(page)
                page.get_by_role("button", name="Score", exact=True).click()
                page.get_by_text("Probability of malignancy").wait_for(timeout=600_000)
                idle(page)
                print(f"scoring {patient.id}'s first 100 images with {IMAGE_MODEL.label()}, "
                      f"upload to result: {time.perf_counter() - started:.2f} s")
                browser.close()
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
