"""Background jobs: progress with a rate and the time left, results, failures as messages."""

import threading

from lympho.jobs import Job, duration


def test_progress_says_rate_and_time_left():
    release = threading.Event()

    def work(progress):
        progress("extract", 0, 100)
        progress("extract", 40, 100)
        release.wait(10)
        return "done"

    job = Job("Extraction", work, context={"classifier": "svm"})
    while job.done < 40:
        threading.Event().wait(0.01)
    line = job.describe()
    assert line.startswith("Extraction: 40/100 images encoded · ") and "img/s · about " in line and " left" in line
    assert job.running and job.context == {"classifier": "svm"}
    release.set()
    assert job.wait(10) == "done" and not job.running and job.error is None


def test_failure_is_kept_as_a_message():
    def work(progress):
        raise ValueError("too few patients for 5 folds")

    job = Job("CV", work)
    job.wait(10)
    assert job.error == "too few patients for 5 folds" and job.result is None


def test_duration():
    assert duration(8.2) == "8 s" and duration(75) == "1 min 15 s"
