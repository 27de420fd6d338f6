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


class Job:
    """Run ``work(progress)`` in a daemon thread; ``progress(stage, done, total)`` is recorded."""

    def __init__(self, name: str, work: Callable[[Callable[[str, int, int], None]], Any]):
        self.name = name
        self.started = time.time()
        self.finished: float | None = None
        self.stage, self.done, self.total = "starting", 0, 0
        self.result: Any = None
        self.error: str | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, args=(work,), name=f"lympho-{name}", daemon=True)
        self._thread.start()

    def _progress(self, stage: str, done: int, total: int) -> None:
        with self._lock:
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

    def describe(self) -> str:
        with self._lock:
            unit = {"extract": "images encoded", "folds": "folds fitted"}.get(self.stage, self.stage)
            return f"{self.name}: {self.done}/{self.total} {unit}" if self.total else f"{self.name}: {self.stage}"

    def wait(self, timeout: float | None = None) -> Any:
        self._thread.join(timeout)
        return self.result
