"""The run tracker: every run as one JSON file under ``<cache>/runs``, with a name, tags and a note.

A run is identified by its *fingerprint*: the configuration (seed, folds and repeats
included) and the data it ran on. Saving a run whose fingerprint is already stored
updates that run in place (same id, name, tags and note) instead of adding a copy, so
re-running an ablation does not double the store. The CLI (``python -m lympho runs``)
and the Runs page both work through :class:`RunStore` and :func:`tracker_table`.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Sequence

import pandas as pd
from filelock import FileLock

from lympho.data import write_text_atomic
from lympho.evaluation import METRICS

#: Fields a user edits; never part of a run's results.
USER_FIELDS = ("name", "tags", "note")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TAG = re.compile(r"^[^\s,]{1,40}$")


class RunNotFound(ValueError):
    """An id that names no stored run."""


def _plain(value):
    """numpy scalars and arrays as JSON numbers and lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def fingerprint(run: dict) -> str:
    """Configuration + data (+ seed, inside the configuration) of a run, hashed."""
    cohort = run.get("cohort", {})
    identity = {"config": run.get("config", {}),
                "data": {k: cohort.get(k) for k in ("root", "n_labelled", "synthetic")}}
    return hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def display_name(run: dict) -> str:
    """The user's name for a run, else its configuration label."""
    return run.get("name") or run.get("label") or run.get("id", "run")


class RunStore:
    """Stored runs, oldest first; a damaged file is skipped, never fatal."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def _path(self, run_id: str) -> Path:
        if not isinstance(run_id, str) or not _ID.match(run_id):
            raise RunNotFound(f"{run_id!r} is not a run id (see `python -m lympho runs list`)")
        return self.directory / f"{run_id}.json"

    def _write(self, run_id: str, run: dict) -> None:
        payload = {k: v for k, v in run.items() if k != "id"}
        write_text_atomic(self._path(run_id), json.dumps(payload, indent=1, default=_plain))

    def _lock(self) -> FileLock:
        """Writers take turns (threads of the dashboard, other processes): a run found
        absent is not stored twice, and an edit never loses a concurrent one."""
        self.directory.mkdir(parents=True, exist_ok=True)
        return FileLock(self.directory / ".lock", timeout=60)

    def save(self, run: dict) -> str:
        """Store ``run``; an identical configuration + data + seed replaces its earlier
        results under the same id, keeping the user's name, tags and note."""
        with self._lock():
            return self._save(run)

    def _save(self, run: dict) -> str:
        run = {**run, "fingerprint": fingerprint(run)}
        known = self._fingerprints()
        existing = next((self.load(run_id) for run_id, (_, _, found) in known.items()
                         if found == run["fingerprint"]), None)
        if existing is not None:
            run_id = existing["id"]
            run.update({k: existing[k] for k in USER_FIELDS if k in existing})
            run["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        else:
            run_id = f"{run['created'].replace(':', '')}-{run['key']}"
            suffix = 1
            while self._path(run_id).exists():
                run_id = f"{run['created'].replace(':', '')}-{run['key']}-{suffix}"
                suffix += 1
        self._write(run_id, run)
        stat = self._path(run_id).stat()
        self._write_index({**known, run_id: [stat.st_mtime_ns, stat.st_size, run["fingerprint"]]})
        return run_id

    def _fingerprints(self) -> dict[str, list]:
        """``{id: [mtime_ns, size, fingerprint]}`` of every readable run. They are remembered
        per file (``.fingerprint-index``, keyed by size and modification time), so a save
        parses only the runs written since, by someone else, not every stored run; a damaged
        file is left out, as in :meth:`runs`."""
        try:
            index = json.loads(self._index_path.read_text())
        except (OSError, ValueError):
            index = {}
        fresh = {}
        for run_id in self.ids():
            try:  # a run deleted since the listing (deletes take no lock) is simply gone
                stat = self._path(run_id).stat()
                entry = index.get(run_id)
                if not (isinstance(entry, list) and entry[:2] == [stat.st_mtime_ns, stat.st_size]):
                    entry = [stat.st_mtime_ns, stat.st_size, fingerprint(self.load(run_id))]
            except (json.JSONDecodeError, OSError, UnicodeDecodeError, RunNotFound):
                continue
            fresh[run_id] = entry
        if fresh != index:
            self._write_index(fresh)
        return fresh

    @property
    def _index_path(self) -> Path:
        return self.directory / ".fingerprint-index"

    def _write_index(self, index: dict) -> None:
        write_text_atomic(self._index_path, json.dumps(index))

    def ids(self) -> list[str]:
        return sorted(p.stem for p in self.directory.glob("*.json")) if self.directory.is_dir() else []

    def load(self, run_id: str) -> dict:
        path = self._path(run_id)
        try:
            return {"id": run_id, **json.loads(path.read_text())}
        except FileNotFoundError:
            raise RunNotFound(f"no stored run {run_id!r} (see `python -m lympho runs list`)") from None

    def runs(self) -> list[dict]:
        loaded = []
        for run_id in self.ids():
            try:
                loaded.append(self.load(run_id))
            except (json.JSONDecodeError, OSError, UnicodeDecodeError, RunNotFound):
                continue
        return loaded

    def _edit(self, run_id: str, **changes) -> dict:
        with self._lock():
            run = self.load(run_id)
            run.update(changes)
            self._write(run_id, run)
        return run

    def rename(self, run_id: str, name: str) -> dict:
        """Give a run a display name ('' restores its configuration label)."""
        name = " ".join(str(name).split())
        if len(name) > 120:
            raise ValueError(f"run name: at most 120 characters, got {len(name)}")
        return self._edit(run_id, name=name or None)

    def tag(self, run_id: str, add: Sequence[str] = (), remove: Sequence[str] = ()) -> dict:
        """Add and remove tags (no spaces or commas, at most 40 characters each)."""
        bad = [t for t in add if not _TAG.match(t)]
        if bad:
            raise ValueError(f"tag {bad[0]!r}: no spaces or commas, 1 to 40 characters")
        tags = [t for t in self.load(run_id).get("tags", []) if t not in remove]
        return self._edit(run_id, tags=tags + [t for t in dict.fromkeys(add) if t not in tags])

    def note(self, run_id: str, text: str) -> dict:
        if len(text) > 5000:
            raise ValueError(f"run note: at most 5000 characters, got {len(text)}")
        return self._edit(run_id, note=text.strip())

    def delete(self, run_id: str) -> None:
        path = self._path(run_id)
        if not path.is_file():
            raise RunNotFound(f"no stored run {run_id!r} (see `python -m lympho runs list`)")
        path.unlink()


def differing_fields(runs: Sequence[dict]) -> list[str]:
    """Configuration fields whose value is not the same in every run (all of them for one run)."""
    fields = list(dict.fromkeys(k for run in runs for k in run.get("config", {})))
    if len(runs) < 2:
        return fields
    return [f for f in fields if len({json.dumps(r.get("config", {}).get(f)) for r in runs}) > 1]


def tracker_table(runs: Sequence[dict], all_fields: bool = False) -> pd.DataFrame:
    """One row per run for the tracker: name, metrics (means, then the balanced accuracy's sd over
    folds and its 95 % bootstrap interval over patients, where the run has one; then balanced
    accuracy and specificity at 95 % sensitivity (apparent, leave-one-repeat-out: the run's
    ``summary.operating_point``), for runs of 2 or more repeats stored since it was kept),
    tags, the configuration fields that differ between ``runs`` (every field with
    ``all_fields``), then the id, the cohort and the date. Numbers stay numbers so that
    columns sort."""
    fields = list(dict.fromkeys(k for run in runs for k in run.get("config", {}))) if all_fields \
        else differing_fields(runs)
    rows = []
    for run in runs:
        summary = run.get("summary", {})
        row = {"name": display_name(run)}
        for metric in METRICS:
            row[metric] = summary.get(metric, {}).get("mean")
        row["balanced_accuracy_std"] = summary.get("balanced_accuracy", {}).get("std")
        interval = summary.get("headline", {}).get("metrics", {}).get("balanced_accuracy", {})
        row["balanced_accuracy_ci_low"], row["balanced_accuracy_ci_high"] = interval.get("low"), interval.get("high")
        at_point = summary.get("operating_point", {}).get("estimate", {}).get("metrics", {})
        for metric in ("balanced_accuracy", "specificity"):  # sensitivity is the target there
            row[f"{metric}_at_op"] = at_point.get(metric, {}).get("estimate")
        row["folds run"] = summary.get("n_folds", len(run.get("folds", [])))
        row["tags"] = ", ".join(run.get("tags", []))
        row.update({f"config.{f}": run.get("config", {}).get(f) for f in fields})
        row["id"] = run.get("id")
        cohort = run.get("cohort", {})
        row["cohort"] = ("synthetic demo" if cohort.get("synthetic") else cohort.get("name")) + \
            f" ({cohort.get('n_labelled')} labelled)"
        row["created"] = run.get("created")
        row["note"] = run.get("note", "")
        rows.append(row)
    return pd.DataFrame(rows)
