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
import sqlite3
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import diskcache
import numpy as np

from lympho.data import CohortError, Patient, cache_error
from lympho.encoders import Encoder, cache_key, describe, make_encoder
from lympho.encoders.preprocessing import Preprocessing
from lympho.hashindex import HashIndex, content_hash  # noqa: F401  (content_hash: part of the API)

Progress = Callable[[int, int], None]
#: Decoded images the loader's workers may hold ahead of the encoder, in bytes. The worker
#: decodes ahead while the network is built (importing torchvision takes about a second, on
#: one core), so those images cost the encoder nothing; past them, decoding takes its CPU
#: time from the encoder (about 6 % of it on a 2-core CPU).
PREFETCH_BYTES = 256 * 2**20


class _Images:
    """What the DataLoader's workers produce per file: the decoded uint8 HWC image
    (``encoder.load``), or with ``read`` whatever the encoder's ``read`` gives (the file's
    bytes for decoding on the device). Any sized, indexable object will do; a decoding
    error travels back as a message, not a crash."""

    def __init__(self, paths: Sequence[Path], encoder: Encoder, read: bool = False):
        self.paths, self.encoder, self.read = list(paths), encoder, read

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            path = self.paths[index]
            return index, (self.encoder.read(path) if self.read else self.encoder.load(path)), None
        except CohortError as err:
            return index, None, str(err)


def _collate(items):
    import torch

    errors = [error for _, _, error in items if error]
    images = [image for _, image, error in items if not error]
    return [i for i, _, _ in items], torch.from_numpy(np.stack(images)) if not errors else None, errors


def _collate_reads(items):
    """Like :func:`_collate`, but the items stay a list: the main process decodes them."""
    errors = [error for _, _, error in items if error]
    return [i for i, _, _ in items], [item for _, item, _ in items], errors


def _encode_files(encoder: Encoder, paths: Sequence[Path]) -> tuple[np.ndarray | None, str | None]:
    """Load and encode a chunk of files in a worker process; an error comes back as text."""
    try:
        return encoder.encode([encoder.load(path) for path in paths]), None
    except CohortError as err:
        return None, str(err)


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

    def _prefetch_batches(self) -> int:
        """Batches each worker may decode ahead: :data:`PREFETCH_BYTES` of decoded pixels."""
        side = getattr(getattr(self.encoder, "preprocessing", None), "size", 224)
        batch_bytes = self.batch_size * side * side * 3 * max(1, self.num_workers)
        return max(4, PREFETCH_BYTES // batch_bytes)

    @property
    def _on_cuda(self) -> bool:
        return getattr(self.encoder, "device_type", "cpu") == "cuda"

    def _cached(self, keys: list[str]) -> dict[int, np.ndarray]:
        found = {}
        if self.cache is None:
            return found
        for i, key in enumerate(keys):
            value = self.cache.get(key)
            if isinstance(value, bytes) and len(value) == 4 * self.feature_dim:
                vector = np.frombuffer(value, dtype=np.float32)
                if np.isfinite(vector).all():
                    found[i] = vector
        return found

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
        from torch.utils.data import DataLoader

        on_device = getattr(self.encoder, "decoder", "pil") == "device"
        workers = self._workers_here()
        loader = DataLoader(_Images(paths, self.encoder, read=on_device), batch_size=self.batch_size,
                            num_workers=workers, collate_fn=_collate_reads if on_device else _collate,
                            pin_memory=self._on_cuda and not on_device, persistent_workers=False,
                            prefetch_factor=self._prefetch_batches() if workers else None)
        for indices, batch, errors in loader:
            if errors:  # raised here, not in a worker, so the message stays one clear line
                raise CohortError(errors[0])
            on_batch(indices, self.encoder.encode(self.encoder.decode(batch) if on_device else batch))

    def _compute_per_image(self, paths: list[Path], on_batch: Callable[[list[int], np.ndarray], None]) -> None:
        """Worker processes load and encode chunks of files; this process only stores them."""
        chunk = 32
        starts = range(0, len(paths), chunk)
        chunks = [paths[i:i + chunk] for i in starts]
        workers = self._workers_here()
        if workers <= 1 or len(chunks) == 1:
            results = (_encode_files(self.encoder, c) for c in chunks)
            self._store_chunks(starts, results, on_batch)
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            self._store_chunks(starts, pool.map(_encode_files, [self.encoder] * len(chunks), chunks), on_batch)

    @staticmethod
    def _store_chunks(starts, results, on_batch) -> None:
        for start, (features, error) in zip(starts, results):
            if error:
                raise CohortError(error)
            on_batch(list(range(start, start + len(features))), features)

    def extract(self, paths: Sequence[Path], progress: Progress | None = None) -> np.ndarray:
        """Features of every image (n, feature_dim), from the cache where possible."""
        started = time.perf_counter()
        prefix = self.key_prefix
        keys = [f"{digest}/{prefix}" for digest in self.hashes.hashes(paths, self.rehash)]
        features = np.empty((len(paths), self.feature_dim), dtype=np.float32)
        found = self._cached(keys)
        for i, vector in found.items():
            features[i] = vector
        missing = [i for i in range(len(paths)) if i not in found]
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
            self._compute([paths[i] for i in missing], store)
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
