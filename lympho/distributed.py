"""The Ray engine: the same extraction and ablation grid, spread over a Ray cluster.

- Extraction is Ray Data batch inference: the images missing from the feature cache become
  rows ``(row, path)``; an actor pool of encoders (one actor per CPU slot, or per GPU when
  the encoder runs on CUDA), each built once, reads, decodes and encodes batches of files;
  the features stream back to this process, which alone writes them into the feature cache
  (diskcache's SQLite is not a network store). Encoders are deterministic per image, so
  the features are those of a single-machine run.
- An ablation's cross-validation grid runs as one Ray task per configuration x repeat;
  the folds are merged in order, so the runs equal a single-process ablation.

Every node must see the cohort's files at the same path (a shared filesystem) and have
the project's requirements installed; this package's code is shipped with the job.
Ray is an optional extra (``requirements-ray.txt``), imported only here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

import lympho
from lympho.data import CohortError

OnBatch = Callable[[list[int], np.ndarray], None]
#: (stage, done, total), as in lympho.experiment
StageProgress = Callable[[str, int, int], None]


def _ray():
    try:
        import ray
    except ImportError:
        raise CohortError("the Ray engine needs the optional extra: .venv/bin/pip install -r "
                          "requirements-ray.txt") from None
    return ray


def runtime_env() -> dict:
    """Ship this package's code to every worker (the cluster provides its dependencies)."""
    return {"py_modules": [str(Path(lympho.__file__).parent)]}


def connect(address: str | None = None) -> None:
    """Join the cluster at ``address`` (``ray://host:10001``, ``host:6379`` or ``auto``), else
    at ``RAY_ADDRESS``, else start a local instance on this machine's cores (loopback only,
    no dashboard). An already connected driver is reused."""
    ray = _ray()
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    local = {} if address else {"include_dashboard": False, "_node_ip_address": "127.0.0.1"}
    ray.init(address=address, runtime_env=runtime_env(), logging_level="warning",
             configure_logging=False, **local)
    ray.data.DataContext.get_current().enable_progress_bars = False  # the CLI shows its own
    logging.getLogger("ray.data").setLevel(logging.ERROR)


class _EncodeFiles:
    """A Ray Data actor: one encoder, built once per actor, loading and encoding batches.

    A file that cannot be decoded comes back as a message in ``error`` (not an exception
    inside Ray), so the driver raises the same one-line :class:`CohortError` as locally.
    """

    def __init__(self, encoder):
        self.encoder = encoder

    def __call__(self, batch: dict) -> dict:
        rows, dim = batch["row"], len(self.encoder.feature_names)
        paths = [Path(path) for path in batch["path"]]
        try:
            if getattr(self.encoder, "decoder", "pil") == "device":  # as the local path: nvJPEG on a GPU
                images = self.encoder.decode([self.encoder.read(path) for path in paths])
            else:
                images = [self.encoder.load(path) for path in paths]
            features, error = self.encoder.encode(images), ""
        except CohortError as err:
            features, error = np.zeros((len(rows), dim), np.float32), str(err)
        return {"row": rows, "features": np.asarray(features, np.float32),
                "error": np.array([error] * len(rows))}


def _on_cuda(encoder) -> bool:
    return getattr(encoder, "device_type", "cpu") == "cuda"


class RayEngine:
    """Runs extraction (and an ablation's grid) on a Ray cluster; see the module's doc."""

    def __init__(self, address: str | None = None, batch_size: int = 32):
        self.address, self.batch_size = address, batch_size

    def _actors(self, encoder) -> tuple[int, dict]:
        """Pool size and per-actor resources: one actor per GPU, else per CPU slot."""
        resources = _ray().cluster_resources()
        if _on_cuda(encoder):
            return max(1, int(resources.get("GPU", 0))), {"num_gpus": 1}
        return max(1, int(resources.get("CPU", 1))), {"num_cpus": 1}

    def compute(self, encoder, paths: Sequence[Path], on_batch: OnBatch) -> None:
        """Encode ``paths`` on the cluster; ``on_batch(indices, features)`` in this process."""
        connect(self.address)
        ray = _ray()
        size, resources = self._actors(encoder)
        rows = [{"row": i, "path": str(Path(p).resolve())} for i, p in enumerate(paths)]
        blocks = max(1, min(-(-len(rows) // self.batch_size), 4 * size))
        dataset = ray.data.from_items(rows, override_num_blocks=blocks)
        pool = ray.data.ActorPoolStrategy(size=min(size, blocks))
        encoded = dataset.map_batches(_EncodeFiles, fn_constructor_args=(encoder,), batch_size=self.batch_size,
                                      batch_format="numpy", compute=pool, **resources)
        for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
            errors = [error for error in batch["error"] if error]
            if errors:
                raise CohortError(str(errors[0]))
            on_batch(batch["row"].tolist(), np.asarray(batch["features"], np.float32))

    def cross_validate_grid(self, jobs: Sequence[tuple], progress: StageProgress | None = None) -> list:
        """One :class:`~lympho.evaluation.CVResult` per job ``(estimator, X, y, ids, options)``
        (``options``: cross_validate's keywords: folds, repeats, seed, ...), computed as one
        Ray task per job and repeat and merged in order: equal to ``cross_validate`` of each
        job in one process."""
        from lympho.evaluation import CVResult

        connect(self.address)
        ray = _ray()
        task = ray.remote(num_cpus=1)(_cross_validate_repeat)
        pending = {}
        for job, (estimator, X, y, ids, options) in enumerate(jobs):
            data = [ray.put(value) for value in (estimator, X, y, ids)]
            for repeat in range(1, options.get("repeats", 1) + 1):
                pending[task.remote(*data, options, repeat)] = (job, options.get("folds", 3))
        parts: list[list] = [[] for _ in jobs]
        total, done = sum(folds for _, folds in pending.values()), 0
        while pending:
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            job, folds = pending.pop(ready)
            parts[job].append(ray.get(ready))
            done += folds
            if progress:
                progress("folds", done, total)
        return [CVResult.concat(part) for part in parts]


def _cross_validate_repeat(estimator, X, y, ids, options: dict, repeat: int):
    """One repeat of a repeated cross-validation, exactly as the full run computes it."""
    from lympho.evaluation import cross_validate

    return cross_validate(estimator, X, y, ids, **options, only_repeat=repeat)
