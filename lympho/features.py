"""Instance feature extraction: any encoder, batched or per image in worker processes, cached.

Like CLAM's first stage, every image is encoded once: its features are stored in a
diskcache keyed by the image's content hash and the encoder's identity (its name, code
version and resolved parameters: weights, seed, device type, precision, library versions,
preprocessing; :func:`lympho.encoders.cache_key`), so re-runs (and renamed copies of the
same file) never re-extract, and a change of any of those never reuses stale features. A
damaged entry is recomputed; a damaged cache file is moved aside and rebuilt.

Torch is imported only by the batched (network) path: extracting morphology features
needs neither torch nor a GPU, and a fully cached run imports nothing heavy. Content
hashes come from a hash index beside the cache (path -> size, mtime, hash;
:mod:`lympho.hashindex`), so unchanged files are not even read, and cache writes go one
transaction per batch. On a GPU, JPEGs are decoded there in batches (nvJPEG)
while the workers only read the files. With an ``engine`` (:mod:`lympho.distributed`)
the missing features are computed on a Ray cluster and stored here.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
import warnings
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, nullcontext
from pathlib import Path
from queue import Queue
from typing import Callable, Iterator, Sequence

import diskcache
import numpy as np

from lympho.data import CohortError, Patient, cache_error, check_image
from lympho.encoders import Encoder, cache_key, describe, make_encoder
from lympho.encoders.preprocessing import Preprocessing
from lympho.hashindex import HashIndex, content_hash  # noqa: F401  (content_hash: part of the API)

Progress = Callable[[int, int], None]
#: Decoded images the loader's workers may hold ahead of the encoder, in bytes. The worker
#: decodes ahead while the network is built (importing torchvision takes about a second, on
#: one core), so those images cost the encoder nothing; past them, decoding takes its CPU
#: time from the encoder (about 6 % of it on a 2-core CPU).
PREFETCH_BYTES = 256 * 2**20
_READ_CHUNK = 500  # cache keys per SQL query, well under SQLite's variable limit
_MODE_RAW = 1  # diskcache's mode of a value stored as bytes in its table


class WorkerError(OSError):
    """An extraction worker process died or could not hand its results back: one line naming
    the cause. An ``OSError`` so that the CLI reports it as one line, like a full disk."""


_worker_encoder = None  # the encoder of this worker process, set once when it starts


def _start_worker(encoder: Encoder) -> None:
    global _worker_encoder
    _worker_encoder = encoder


def _in_worker(task, paths):
    """Run ``task`` on this worker process's encoder (sent once, not with every chunk)."""
    return task(_worker_encoder, paths)


def _load_chunk(encoder: Encoder, paths: Sequence[Path]) -> tuple[np.ndarray | None, str | None]:
    """A chunk decoded and stacked (uint8 NHWC), for a batched encoder; an error as text."""
    try:
        return np.stack([encoder.load(path) for path in paths]), None
    except CohortError as err:
        return None, str(err)


def _read_chunk(encoder: Encoder, paths: Sequence[Path]) -> tuple[list | None, str | None]:
    """A chunk read for decoding on the encoder's device (``encoder.read``); an error as text."""
    try:
        return [encoder.read(path) for path in paths], None
    except CohortError as err:
        return None, str(err)


def _encode_chunk(encoder: Encoder, paths: Sequence[Path]) -> tuple[np.ndarray | None, str | None]:
    """A chunk loaded and encoded whole, for a per-image encoder; an error as text."""
    try:
        return encoder.encode([encoder.load(path) for path in paths]), None
    except CohortError as err:
        return None, str(err)


def _ahead(submit: Callable, chunks: Sequence, window: int) -> Iterator:
    """Results of ``submit(chunk).result()`` in order, with ``window`` chunks in flight; the
    first ones are submitted now, so the work starts before the caller asks for a result."""
    pending = deque(submit(chunk) for chunk in chunks[:window])

    def results():
        for chunk in chunks[window:]:
            yield pending.popleft().result()
            pending.append(submit(chunk))
        while pending:
            yield pending.popleft().result()

    return results()


def _exit_cause(pool: ProcessPoolExecutor) -> str:
    """How the pool's first broken worker ended (a signal or an exit code), from its processes."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        process.join(timeout=2)  # the pool is reaping them
    codes = [p.exitcode for p in processes if p.exitcode]
    killed = [c for c in codes if c < 0 and -c != signal.SIGTERM] or codes  # the others were stopped by the pool
    if not killed:
        return "it ended abruptly"
    code = killed[0]
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


def _worker_error(pool: ProcessPoolExecutor, err: BaseException) -> WorkerError:
    if isinstance(err, BrokenProcessPool):
        return WorkerError(f"an extraction worker process died ({_exit_cause(pool)}; out of memory, or killed); "
                           f"what is already cached is kept: run the command again")
    return WorkerError(f"an extraction worker process failed: {type(err).__name__}: "
                       f"{str(err).splitlines()[0] if str(err) else ''}".rstrip(": "))


@contextmanager
def _processes(task, encoder: Encoder, chunks: Sequence, workers: int, window: int) -> Iterator[Iterator]:
    """``task(encoder, chunk)`` for every chunk in ``workers`` processes, results in order.

    A worker that dies or fails stops the run with a :class:`WorkerError`, never a hang:
    results come back through pipes (no shared memory to run out of), one per chunk, and a
    dead worker breaks the pool. Processes that cannot be started (no memory, no room for
    the pool's semaphores in ``/dev/shm``) leave the work to this process, with a warning."""
    try:
        pool = ProcessPoolExecutor(workers, initializer=_start_worker, initargs=(encoder,))
        pool.submit(os.getpid).result()  # every worker is up: forked now, before the writer thread
    except (OSError, BrokenProcessPool) as err:
        warnings.warn(f"extraction runs in this process: worker processes could not start ({err})", stacklevel=3)
        yield (task(encoder, chunk) for chunk in chunks)
        return
    try:
        yield _guarded(pool, _ahead(lambda chunk: pool.submit(_in_worker, task, chunk), chunks, window))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _guarded(pool: ProcessPoolExecutor, results: Iterator) -> Iterator:
    """``results``, any worker failure turned into one :class:`WorkerError`."""
    while True:
        try:
            result = next(results)
        except StopIteration:
            return
        except Exception as err:  # what a worker raised, or its death
            raise _worker_error(pool, err) from None
        yield result


@contextmanager
def _threads(task, encoder: Encoder, chunks: Sequence, threads: int, window: int) -> Iterator[Iterator]:
    """``task(encoder, chunk)`` for every chunk in a thread pool, results in order (for work
    that releases the GIL: reading files)."""
    with ThreadPoolExecutor(threads, thread_name_prefix="lympho-read") as pool:
        try:
            yield _ahead(lambda chunk: pool.submit(task, encoder, chunk), chunks, window)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class _Writer:
    """Stores batches on a thread of its own, so the encoder never waits on the cache.

    A bounded queue holds at most ``depth`` batches. The first error of a write (a full disk)
    is raised in the caller's thread by the next :meth:`put` or by the exit; later batches are
    then dropped. On exit every batch already handed over is written first."""

    def __init__(self, store: Callable[[list[int], np.ndarray], None], depth: int = 4):
        self.store, self.error = store, None
        self.queue: Queue = Queue(depth)
        self.thread = threading.Thread(target=self._run, name="lympho-cache-writer", daemon=True)

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.store(*item)
                except BaseException as err:  # noqa: B036  (raised again in the caller's thread)
                    self.error = err

    def put(self, indices: list[int], features: np.ndarray) -> None:
        self._raise()
        self.queue.put((indices, features))

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def __enter__(self) -> "_Writer":
        self.thread.start()
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.queue.put(None)
        self.thread.join()
        if kind is None:
            self._raise()


def open_feature_cache(directory: Path) -> diskcache.Cache:
    """Open the cache; an unreadable database is moved aside (kept, never deleted) and rebuilt.
    A directory that cannot be created or written is a :class:`CacheError` naming it.

    Nothing is ever evicted: diskcache's default would silently drop features beyond 1 GB
    (about 450,000 images), and skipping its cull check makes each write about a quarter
    faster, which counts on a GPU."""
    directory = Path(directory)
    try:
        cache = diskcache.Cache(directory, eviction_policy="none")
        cache.get("__probe__")
        return cache
    except (OSError, sqlite3.OperationalError) as err:  # not damage: read-only, locked, full
        raise cache_error(directory, err) from None
    except sqlite3.DatabaseError:
        aside = directory.with_name(f"{directory.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(directory, aside)
        return diskcache.Cache(directory, eviction_policy="none")


class FeatureExtractor:
    """Encode lymphocyte images with a named encoder, caching every instance's features.

    ``encoder`` is a registry name (``weights``, ``precision``, ``device`` and the
    preprocessing's crop apply to the torchvision kind) or an :class:`Encoder` instance.
    """

    def __init__(self, encoder: str | Encoder = "resnet18", weights: str = "imagenet",
                 precision: str = "auto", device: str = "auto", batch_size: int = 64,
                 preprocessing: Preprocessing = Preprocessing(), cache_dir: Path | None = None,
                 num_workers: int | None = None, engine=None, rehash: bool = False):
        self.encoder = (make_encoder(encoder, weights, precision, device, preprocessing.crop)
                        if isinstance(encoder, str) else encoder)
        self.batch_size = batch_size
        self.cache = open_feature_cache(Path(cache_dir) / "features") if cache_dir else None
        self.hashes = HashIndex(Path(cache_dir) / "hash-index.sqlite" if cache_dir else None)
        self.engine, self.rehash = engine, rehash
        self.num_workers = self._default_workers() if num_workers is None else num_workers
        self.last_stats: dict = {}

    @property
    def feature_dim(self) -> int:
        return len(self.encoder.feature_names)

    @property
    def key_prefix(self) -> str:
        return cache_key(self.encoder)

    def describe(self) -> dict:
        """The encoder's name, version and resolved parameters (device, precision, versions)."""
        return describe(self.encoder)

    def _default_workers(self) -> int:
        # Per-image CPU encoders use every core. For a network on a GPU decoding is the
        # bottleneck: every core decodes. On a CPU the cores run the network, and a quarter
        # of them decode, which keeps up with it (PIL decodes ~2,000 img/s per worker).
        cores = os.cpu_count() or 1
        if not self.encoder.batched or self._on_cuda:
            return cores
        return max(1, cores // 4)

    def _workers_here(self) -> int:
        """``num_workers`` from the main thread (the CLI); none from any other (the dashboard's
        jobs), where this process does the work itself. A process forked beside other threads
        can inherit a lock one of them holds (an allocator's, a thread pool's) and wait on it
        forever; and multiprocessing's other start methods re-import the parent's ``__main__``,
        which in the dashboard is a page script."""
        return self.num_workers if threading.current_thread() is threading.main_thread() else 0

    def _window(self, workers: int) -> int:
        """Batches decoded ahead of the encoder: :data:`PREFETCH_BYTES` of pixels, at least
        two per worker."""
        side = getattr(getattr(self.encoder, "preprocessing", None), "size", 224)
        return max(2 * max(1, workers), PREFETCH_BYTES // (self.batch_size * side * side * 3))

    @property
    def _on_cuda(self) -> bool:
        return getattr(self.encoder, "device_type", "cpu") == "cuda"

    def _cached(self, keys: list[str]) -> tuple[list[int], np.ndarray]:
        """Positions of the keys whose features are cached, whole and finite, and those features.

        Read in one query per :data:`_READ_CHUNK` keys straight from diskcache's table (a
        ``get`` per key costs about 20 us); an entry diskcache keeps in a file of its own (not
        expected at these sizes) is read by ``get``. A damaged entry counts as missing."""
        found, values = [], []
        if self.cache is None:
            return found, np.empty((0, self.feature_dim), np.float32)
        positions: dict[str, list[int]] = {}
        for i, key in enumerate(keys):  # the same image may be in the cohort twice
            positions.setdefault(key, []).append(i)
        unique = list(positions)
        for start in range(0, len(unique), _READ_CHUNK):
            part = unique[start:start + _READ_CHUNK]
            rows = self.cache._sql(f"SELECT key, mode, value FROM Cache WHERE raw = 1 AND key IN "
                                   f"({','.join('?' * len(part))})", part).fetchall()
            for key, mode, value in rows:
                value = value if mode == _MODE_RAW else self.cache.get(key)
                found += positions[key]
                values += [value] * len(positions[key])
        size = 4 * self.feature_dim
        whole = [i for i, value in enumerate(values) if isinstance(value, bytes) and len(value) == size]
        vectors = np.frombuffer(b"".join(values[i] for i in whole), np.float32).reshape(-1, self.feature_dim)
        finite = np.isfinite(vectors).all(axis=1)
        return [found[i] for i, ok in zip(whole, finite) if ok], vectors[finite]

    def _store(self, keys: list[str], vectors: np.ndarray) -> None:
        """One batch in one transaction: after a crash or a full disk, the cache holds whole
        batches only, and the next run extracts the rest."""
        try:
            with self.cache.transact():
                for key, vector in zip(keys, vectors):
                    self.cache.set(key, vector.astype(np.float32).tobytes())
        except (OSError, sqlite3.OperationalError) as err:
            raise cache_error(self.cache.directory, err) from None

    def _compute(self, paths: list[Path], on_batch: Callable[[list[int], np.ndarray], None]) -> None:
        if self.engine is not None:
            self.engine.compute(self.encoder, paths, on_batch)
        elif self.encoder.batched:
            self._compute_batched(paths, on_batch)
        else:
            self._compute_per_image(paths, on_batch)

    def _compute_batched(self, paths: list[Path], on_batch: Callable[[list[int], np.ndarray], None]) -> None:
        """A pipeline: files decoded ahead (Pillow in worker processes; on a device decoder,
        read in threads and decoded here in batches), the encoder in this thread, the cache
        written by another. Decoding starts before the first batch builds the network."""
        on_device = getattr(self.encoder, "decoder", "pil") == "device"
        chunks = [paths[i:i + self.batch_size] for i in range(0, len(paths), self.batch_size)]
        if on_device:
            threads = min(8, os.cpu_count() or 1)
            source = _threads(_read_chunk, self.encoder, chunks, threads, self._window(threads))
        else:
            workers = self._workers_here()
            source = (_processes(_load_chunk, self.encoder, chunks, workers, self._window(workers)) if workers
                      else nullcontext(_load_chunk(self.encoder, chunk) for chunk in chunks))
        with source as results, _Writer(on_batch) as writer:
            for start, (batch, error) in zip(range(0, len(paths), self.batch_size), results):
                if error:  # raised here, not in a worker, so the message stays one clear line
                    raise CohortError(error)
                features = self.encoder.encode(self.encoder.decode(batch) if on_device else batch)
                writer.put(list(range(start, start + len(features))), features)

    def _compute_per_image(self, paths: list[Path], on_batch: Callable[[list[int], np.ndarray], None]) -> None:
        """Worker processes load and encode chunks of files; this process only stores them."""
        chunk = 32
        chunks = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
        workers = self._workers_here() if len(chunks) > 1 else 0
        source = (_processes(_encode_chunk, self.encoder, chunks, workers, 4 * workers) if workers > 1
                  else nullcontext(_encode_chunk(self.encoder, c) for c in chunks))
        with source as results:
            for start, (features, error) in zip(range(0, len(paths), chunk), results):
                if error:
                    raise CohortError(error)
                on_batch(list(range(start, start + len(features))), features)

    def extract(self, paths: Sequence[Path], progress: Progress | None = None) -> np.ndarray:
        """Features of every image (n, feature_dim), from the cache where possible.

        The images that have to be decoded (their content's features are not cached) have
        their headers read first (:func:`lympho.data.check_image`): an unreadable one is
        refused by name before any is decoded. A cached one was decoded when it was stored,
        so a fully cached run opens no image file at all."""
        started = time.perf_counter()
        prefix = self.key_prefix
        keys = [f"{digest}/{prefix}" for digest in self.hashes.hashes(paths, self.rehash)]
        features = np.empty((len(paths), self.feature_dim), dtype=np.float32)
        found, vectors = self._cached(keys)
        features[found] = vectors
        is_missing = np.ones(len(paths), bool)
        is_missing[found] = False
        missing = np.flatnonzero(is_missing).tolist()
        done = len(found)
        if progress:
            progress(done, len(paths))

        def store(indices: list[int], batch_features: np.ndarray) -> None:
            nonlocal done
            rows = [missing[i] for i in indices]
            features[rows] = batch_features
            if self.cache is not None:
                self._store([keys[row] for row in rows], batch_features)
            done += len(rows)
            if progress:
                progress(done, len(paths))

        if missing:
            todo = [paths[i] for i in missing]
            for path in todo:  # an unreadable file is refused by name before anything is computed
                check_image(path)
            self._compute(todo, store)
        seconds = time.perf_counter() - started
        self.last_stats = {"images": len(paths), "extracted": len(missing), "cached": len(found),
                           "seconds": seconds, "images_per_second": len(paths) / max(seconds, 1e-9)}
        return features

    def bags(self, patients: Sequence[Patient], progress: Progress | None = None) -> list[np.ndarray]:
        """One (n_images, feature_dim) array per patient, extracted in one batched pass."""
        paths = [path for patient in patients for path in patient.images]
        features = self.extract(paths, progress)
        bounds = np.cumsum([0] + [len(p.images) for p in patients])
        return [features[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
