"""Five people on one dashboard at once (loopback only, bounded in count and time): three run
experiments and two score patients, all at the same moment. Every job finishes, every run is
stored once, a sixth visitor's page still opens, and the server's memory stays bounded.
Then a cohort whose patient IDs and file names are HTML shows them as text.

The figures (job times, the sixth page's load time, memory) go to
test-artifacts/load-test.json; the README quotes them with the machine they ran on.
"""

import json
import os
import platform
import subprocess
import threading
import time
from pathlib import Path

import pytest

from lympho.data import load_cohort
from lympho.experiment import ExperimentConfig
from lympho.scoring import save_model, train_model
from lympho.synthetic import demo_cohort_dir, write_demo_cohort
from tests.test_browser import CHROMIUM_FLAGS, chromium, expect, running_dashboard, wait_for_idle

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
HOSTILE = "<img src=x onerror=alert(1)>"
EXPERIMENTS, SCORERS = 3, 2
MAX_SERVER_RSS_MB = 3000  # the bound asserted; about 1 GB measured (README)


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class MemorySampler(threading.Thread):
    """The server's resident memory every 0.2 s, until stopped."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.samples, self.stopped = pid, [], threading.Event()

    def run(self):
        while not self.stopped.wait(0.2) and Path(f"/proc/{self.pid}").exists():
            self.samples.append(rss_mb(self.pid))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The dashboard on a free loopback port: the demo cohort, a trained clinical model, and a
    cohort with hostile IDs and file names for the escaping check."""
    chromium()
    cache = tmp_path_factory.mktemp("load-cache")
    cohort = load_cohort(demo_cohort_dir(cache), synthetic=True)
    config = ExperimentConfig(features="clinical", classifier="logreg")
    save_model(train_model(cohort, config, cache, threshold_repeats=2, outer_repeats=1), cache / "models" / "clinical")
    hostile = write_demo_cohort(tmp_path_factory.mktemp("hostile") / "cohort", n_train=4, n_test=0,
                                images_per_patient=(2, 2), seed=1)
    table = (hostile / "trainset" / "trainset_true.csv").read_text().splitlines()
    first = table[1].split(",")[0]
    (hostile / "trainset" / first).rename(hostile / "trainset" / HOSTILE)
    image = sorted((hostile / "trainset" / HOSTILE).iterdir())[0]
    image.rename(image.with_name(f"{HOSTILE}.jpg"))
    (hostile / "trainset" / "trainset_true.csv").write_text("\n".join([table[0], table[1].replace(first, HOSTILE, 1),
                                                                      *table[2:]]) + "\n")
    with running_dashboard(cache, startup_s=90) as (url, process):
        yield {"url": url, "cache": cache, "pid": process.pid, "hostile": hostile,
               "patient": list(load_cohort(demo_cohort_dir(cache)).select("test")[0].images)}


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


def new_pages(browser, urls: list[str]) -> list:
    """One new session (browser context) per URL, all loading at once; returned when idle."""
    pages = []
    for url in urls:
        context = browser.new_context(viewport={"width": 1300, "height": 900})
        context.set_default_timeout(180_000)
        pages.append(context.new_page())
        pages[-1].goto(url, wait_until="commit")
    for page in pages:
        wait_for_idle(page, timeout=180_000)
    return pages


def no_exception(page) -> bool:
    return page.locator("[data-testid='stException']").count() == 0


def test_five_sessions_at_once(server, browser):
    url = server["url"]
    idle_mb = rss_mb(server["pid"])  # before any session
    sampler = MemorySampler(server["pid"])
    sampler.start()
    pages = new_pages(browser, [f"{url}/experiment"] * EXPERIMENTS + [f"{url}/score"] * SCORERS)
    experiments, scorers = pages[:EXPERIMENTS], pages[EXPERIMENTS:]
    for seed, page in enumerate(experiments, start=11):  # three different runs
        page.get_by_label("Seed").fill(str(seed))
        page.get_by_label("Seed").press("Enter")
        wait_for_idle(page)
    for number, page in enumerate(scorers):
        page.get_by_label("Patient ID").fill(f"P-{number} {HOSTILE}")  # typed by a user: shown as text
        page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files([str(p) for p in server["patient"]])
        page.get_by_text(server["patient"][-1].name).first.wait_for()
        page.wait_for_timeout(1000)  # let every upload finish
        wait_for_idle(page)

    started = time.perf_counter()
    for page in experiments:
        page.get_by_role("button", name="Run experiment").click()
    for page in scorers:
        page.get_by_role("button", name="Score", exact=True).click()
    probe_started = time.perf_counter()
    probe = new_pages(browser, [f"{url}/data"])[0]  # a sixth visitor, while all five work
    probe_seconds = time.perf_counter() - probe_started
    expect(probe.get_by_text("SYNTHETIC DEMO COHORT").first).to_be_visible()
    assert no_exception(probe)

    finished = {}
    for name, page, text in ([(f"experiment {i}", p, "Stored as run") for i, p in enumerate(experiments)]
                             + [(f"score {i}", p, "Probability of malignancy") for i, p in enumerate(scorers)]):
        page.get_by_text(text, exact=text != "Stored as run").first.wait_for(timeout=120_000)
        finished[name] = time.perf_counter() - started
        wait_for_idle(page)
        assert no_exception(page) and page.locator("img[src='x']").count() == 0, name
    sampler.stopped.set()
    sampler.join()

    runs = sorted((server["cache"] / "runs").glob("*.json"))
    seeds = sorted(json.loads(p.read_text())["config"]["seed"] for p in runs)
    assert seeds == [11, 12, 13]  # every run stored, each once
    peak = max(sampler.samples + [rss_mb(server["pid"])])
    assert peak < MAX_SERVER_RSS_MB
    figures = {"sessions": EXPERIMENTS + SCORERS, "all_jobs_done_s": round(max(finished.values()), 2),
               "job_done_s": {k: round(v, 2) for k, v in finished.items()},
               "sixth_page_load_s": round(probe_seconds, 2), "server_rss_at_start_mb": round(idle_mb),
               "server_rss_peak_mb": round(peak), "cpu": cpu_model(), "cores": os.cpu_count(),
               "python": platform.python_version()}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "load-test.json").write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures))


def test_hostile_ids_and_file_names_render_as_text(server, browser):
    page = new_pages(browser, [server["url"]])[0]
    page.get_by_role("combobox", name="Cohort").click()
    page.get_by_role("option", name="Another directory…").click()
    page.get_by_label("Data directory (challenge layout)").fill(str(server["hostile"]))
    page.get_by_label("Data directory (challenge layout)").press("Enter")
    wait_for_idle(page)
    page.get_by_test_id("stSidebarNavItems").get_by_role("link", name="Data").click()  # this session: a new URL would start a new one
    wait_for_idle(page)
    assert page.get_by_role("combobox", name="Patient").input_value() == HOSTILE  # the first patient
    assert no_exception(page)
    assert page.locator("img[src='x']").count() == 0
    assert page.get_by_text(HOSTILE).count() >= 1  # the patient's line, as text
    page.get_by_text(HOSTILE).first.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "hostile-data.png"))


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")
