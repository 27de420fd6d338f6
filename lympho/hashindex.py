"""Content hashes of image files, reused while a file's size and modification time hold.

The feature cache is keyed by each image's content hash, so without this index every run
reads and hashes every file before it can look anything up. The index is a small SQLite
table beside the feature cache, ``path -> (size, mtime_ns, hash)``: a file whose size or
modification time changed is hashed again, and ``rehash=True`` hashes every file (for a
copy that kept the timestamps but not the content). Like git's index, a file modified in
the last seconds before it was hashed is not recorded, since a second write within the
clock's resolution would leave size and time unchanged. Hashing runs in a thread pool
(``hashlib`` releases the GIL on large buffers), off the main thread.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from lympho.data import CohortError

#: Files modified less than this long before they were hashed are not recorded (seconds).
RACY_SECONDS = 2.0
_CHUNK = 500  # paths per SQL statement, well under SQLite's variable limit


def content_hash(path: Path | str) -> str:
    """blake2b-128 of the file's bytes: the image part of a feature-cache key."""
    try:
        return hashlib.blake2b(Path(path).read_bytes(), digest_size=16).hexdigest()
    except OSError as err:
        raise CohortError(f"unreadable image ({err.strerror or err})", path) from None


def _stat(path: str) -> tuple[int, int]:
    try:
        info = os.stat(path)
    except OSError as err:
        raise CohortError(f"unreadable image ({err.strerror or err})", path) from None
    return info.st_size, info.st_mtime_ns


def _hash_chunk(paths: Sequence[str]) -> list[tuple[str, int, int, str]]:
    """``(path, size, mtime_ns, hash)`` per file, the stat taken before the read."""
    return [(path, *_stat(path), content_hash(path)) for path in paths]


def hash_files(paths: Sequence[str], threads: int | None = None) -> list[tuple[str, int, int, str]]:
    """Hash files in a thread pool, one contiguous chunk per thread; results in order."""
    threads = threads or min(8, os.cpu_count() or 1)
    if threads <= 1 or len(paths) < 64:
        return _hash_chunk(paths)
    size = -(-len(paths) // threads)
    with ThreadPoolExecutor(threads, thread_name_prefix="lympho-hash") as pool:
        parts = pool.map(_hash_chunk, [paths[i:i + size] for i in range(0, len(paths), size)])
        return [row for part in parts for row in part]


class HashIndex:
    """``path -> (size, mtime_ns, content hash)`` in SQLite; ``None`` as file: no index.

    The index only saves reading files: where it cannot be written (a read-only or locked
    cache) every file is hashed, as without it.
    """

    def __init__(self, file: Path | None):
        self.file = Path(file) if file else None
        if self.file:
            try:
                self.file.parent.mkdir(parents=True, exist_ok=True)
                self._create()
            except (OSError, sqlite3.OperationalError):  # read-only or locked: not damage
                self.file = None
            except sqlite3.DatabaseError:  # damaged: moved aside (kept), rebuilt by hashing
                aside = f"{self.file.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
                os.replace(self.file, self.file.with_name(aside))
                self._create()

    def _create(self) -> None:
        with self._session() as db:
            db.execute("CREATE TABLE IF NOT EXISTS hashes "
                       "(path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, hash TEXT)")

    @contextmanager
    def _session(self) -> Iterator[sqlite3.Connection]:
        """One connection, one transaction (committed on success), closed after."""
        db = sqlite3.connect(self.file, timeout=60)
        try:
            with db:
                yield db
        finally:
            db.close()

    def _known(self, paths: list[str]) -> dict[str, str]:
        """``path -> "size mtime_ns hash"`` of the recorded files among ``paths``: one string per
        row, so that SQLite's rows become a dict without a Python step per file."""
        known: dict[str, str] = {}
        try:
            with self._session() as db:
                for i in range(0, len(paths), _CHUNK):
                    part = paths[i:i + _CHUNK]
                    known.update(db.execute(f"SELECT path, size || ' ' || mtime_ns || ' ' || hash FROM hashes "
                                            f"WHERE path IN ({','.join('?' * len(part))})", part))
        except sqlite3.DatabaseError:  # unreadable now: hash every file
            return {}
        return known

    def _record(self, rows: list[tuple[str, int, int, str]]) -> None:
        settled = time.time_ns() - int(RACY_SECONDS * 1e9)
        rows = [row for row in rows if row[2] < settled]
        if rows:
            try:
                with self._session() as db:  # one transaction
                    db.executemany("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?)", rows)
            except sqlite3.OperationalError:  # read-only, locked or full: next run hashes them again
                pass

    def hashes(self, paths: Sequence[Path | str], rehash: bool = False) -> list[str]:
        """Content hash of every file, in order; unchanged files are not read."""
        names = absolute(paths)
        if self.file is None:
            return [digest for *_, digest in hash_files(names)]
        unique = list(dict.fromkeys(names))
        known = {} if rehash else self._known(unique)
        digests: dict[str, str] = {}
        for name in unique:
            entry = known.get(name)
            if entry:
                size, mtime = _stat(name)
                stamp = f"{size} {mtime} "
                if entry.startswith(stamp):
                    digests[name] = entry[len(stamp):]
        fresh = hash_files([name for name in unique if name not in digests])
        self._record(fresh)
        digests.update((name, digest) for name, *_, digest in fresh)
        return [digests[name] for name in names]


def absolute(paths: Sequence[Path | str]) -> list[str]:
    """``os.path.abspath`` of every path; an absolute path already in normal form (the
    cohort's files, nearly always) is taken as it is, which is several times cheaper."""
    names = [os.fspath(p) for p in paths]
    return [name if name[:1] == "/" and "/." not in name and "//" not in name else os.path.abspath(name)
            for name in names]
