"""Long work (extraction, cross-validation) in a background thread, with its progress.

The dashboard reruns its script whenever a widget changes; work started inside the
script would be thrown away. A :class:`Job` lives outside the script run, so a page can
start one, let the user keep clicking, and poll ``progress`` until ``result`` is ready.
"""

from __future__ import annotations

import threading
import time
import traceback
from typing import Any, Callable


#: What ``done`` counts in each stage, for the progress line.
UNITS = {"extract": ("images encoded", "img/s"), "folds": ("folds fitted", "folds/s"),
         "cells": ("cells decoded", "cells/s"), "pretrain": ("pretraining steps", "steps/s"),
         "demo": ("patients generated", "patients/s")}


def duration(seconds: float) -> str:
    """``75`` -> ``1 min 15 s``; ``8.2`` -> ``8 s``."""
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class Job:
    """Run ``work(progress)`` in a daemon thread; ``progress(stage, done, total)`` is recorded,
    with the stage's start so that a rate and the time left can be given.

    ``context`` is whatever the page wants back when the user returns (e.g. the config).
    """

    def __init__(self, name: str, work: Callable[[Callable[[str, int, int], None]], Any], context: Any = None):
        self.name = name
        self.context = context
        self.started = time.time()
        self.finished: float | None = None
        self.stage, self.done, self.total = "starting", 0, 0
        self._stage_start, self._stage_done0 = self.started, 0
        self.result: Any = None
        self.error: str | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, args=(work,), name=f"lympho-{name}", daemon=True)
        self._thread.start()

    def _progress(self, stage: str, done: int, total: int) -> None:
        with self._lock:
            if stage != self.stage or done < self.done:
                self._stage_start, self._stage_done0 = time.time(), done
            self.stage, self.done, self.total = stage, done, total

    def _run(self, work) -> None:
        try:
            self.result = work(self._progress)
        except Exception as err:  # reported to the user by the page, not raised in a thread
            self.error = str(err) or traceback.format_exc(limit=1)
        finally:
            self.finished = time.time()

    @property
    def running(self) -> bool:
        return self.finished is None

    @property
    def fraction(self) -> float:
        with self._lock:
            return self.done / self.total if self.total else 0.0

    def rate(self) -> float | None:
        """Items a second in the current stage, once some progress was made."""
        with self._lock:
            elapsed, done = time.time() - self._stage_start, self.done - self._stage_done0
        return done / elapsed if done > 0 and elapsed > 0 else None

    def describe(self) -> str:
        """E.g. ``Extraction: 576/9017 images encoded · 75 img/s · about 1 min 53 s left (8 s so far)``."""
        rate = self.rate()
        with self._lock:
            stage, done, total = self.stage, self.done, self.total
        elapsed = f"{duration(time.time() - self.started)} so far"
        if not total:
            return f"{self.name}: {stage} ({elapsed})"
        unit, per_second = UNITS.get(stage, (stage, "/s"))
        text = f"{self.name}: {done}/{total} {unit}"
        if rate:
            speed = f"{rate:.1f}" if rate < 10 else f"{rate:.0f}"
            text += f" · {speed} {per_second} · about {duration((total - done) / rate)} left"
        return f"{text} ({elapsed})"

    def wait(self, timeout: float | None = None) -> Any:
        self._thread.join(timeout)
        return self.result
