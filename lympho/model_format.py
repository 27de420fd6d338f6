"""The fitted pipeline on disk, in a format that cannot run code when it is loaded.

A pickle (``joblib``) runs whatever its author put in it the moment it is loaded, and a
checksum beside it does not help: whoever hands over a model directory writes both. So a
pipeline is stored with skops (``pipeline.skops``): a zip of a JSON tree of the objects'
types and states, numpy arrays as ``.npy`` (loaded without pickle). Loading it refuses,
before creating anything, every type outside an explicit list: scikit-learn's own
estimators (skops' default list), imbalanced-learn's pipeline and samplers, and the
estimator classes of ``lympho.models``. Our estimators keep a state of plain types for
this: torch networks as numpy weight arrays, XGBoost boosters as XGBoost's own JSON.

Models saved before this format (``pipeline.joblib``, model format 1) load only when the
caller says it trusts them (``--trust-pickle``, a checkbox on the Score page).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import pkgutil
import zipfile
from pathlib import Path

PIPELINE_FILE = "pipeline.skops"
LEGACY_PIPELINE_FILE = "pipeline.joblib"
#: A model file (and what it unpacks to) larger than this is refused before loading.
MAX_MODEL_BYTES = 512 * 2**20


class ModelError(RuntimeError):
    """A model directory that is missing, incomplete, damaged or unsafe to load."""


class UnsafeModelError(ModelError):
    """A model file that would need untrusted code, or more memory than a model needs."""


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def our_estimator_types() -> list[str]:
    """Every scikit-learn estimator class defined in the ``lympho.models`` package."""
    from sklearn.base import BaseEstimator

    import lympho.models as package

    names = set()
    for module_info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
        module = importlib.import_module(module_info.name)
        names |= {_type_name(cls) for _, cls in inspect.getmembers(module, inspect.isclass)
                  if issubclass(cls, BaseEstimator) and cls.__module__ == module.__name__}
    return sorted(names)


def trusted_types() -> list[str]:
    """The types a model file may hold besides skops' defaults (scikit-learn, numpy, scipy
    and builtins): imbalanced-learn's pipeline and samplers, and our own estimators."""
    from imblearn.over_sampling import SMOTE, SMOTENC
    from imblearn.pipeline import Pipeline

    return sorted({_type_name(cls) for cls in (Pipeline, SMOTE, SMOTENC)} | set(our_estimator_types()))


def _for_prediction(pipeline):
    """``pipeline`` with its samplers (SMOTE ...) unfitted: they only act while fitting, and
    their fitted state (a nearest-neighbour index) would widen the trusted types."""
    from sklearn.base import clone

    steps = getattr(pipeline, "steps", None)
    if not steps or not any(hasattr(step, "fit_resample") for _, step in steps):
        return pipeline
    stored = copy.copy(pipeline)
    stored.steps = [(name, clone(step) if hasattr(step, "fit_resample") else step) for name, step in steps]
    return stored


def save_pipeline(pipeline, folder: Path) -> Path:
    """Write ``pipeline`` as ``folder/pipeline.skops``; refuse one that could not be loaded
    back safely (a type outside :func:`trusted_types`), naming the types."""
    import skops.io as sio

    path = Path(folder) / PIPELINE_FILE
    data = sio.dumps(_for_prediction(pipeline))
    untrusted = sorted(set(sio.get_untrusted_types(data=data)) - set(trusted_types()))
    if untrusted:
        raise UnsafeModelError(f"cannot store this pipeline safely: it holds {', '.join(untrusted)} "
                               f"(estimators must keep a state of plain types; see lympho.model_format)")
    path.write_bytes(data)
    return path


def _check_size(path: Path) -> None:
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            size = max(size, sum(info.file_size for info in archive.infolist()))
    except zipfile.BadZipFile:
        raise UnsafeModelError(f"{path}: not a model file (not a skops archive)") from None
    if size > MAX_MODEL_BYTES:
        raise UnsafeModelError(f"{path}: {size / 2**20:.0f} MiB unpacked, more than a model needs "
                               f"({MAX_MODEL_BYTES / 2**20:.0f} MiB); refusing to load it")


def load_pipeline(path: Path):
    """Load a ``pipeline.skops`` without running code from it: every type it names must be
    trusted (checked by skops before any object is created)."""
    import skops.io as sio

    path = Path(path)
    _check_size(path)
    trusted = trusted_types()
    untrusted = sorted(set(sio.get_untrusted_types(file=path)) - set(trusted))
    if untrusted:
        raise UnsafeModelError(f"{path}: refusing to load: it names types that are not trusted "
                               f"({', '.join(untrusted)}); a model file can only hold scikit-learn, "
                               f"imbalanced-learn and lympho estimators")
    try:
        return sio.load(path, trusted=trusted)
    except Exception as err:  # a damaged or hand-made tree: never half-trusted
        raise UnsafeModelError(f"{path}: not a loadable model file ({type(err).__name__}: {err})") from None


def load_legacy_pipeline(path: Path, trust_pickle: bool):
    """Load an old ``pipeline.joblib`` (a pickle) only when ``trust_pickle`` says so."""
    if not trust_pickle:
        raise UnsafeModelError(
            f"{path}: an old-format model: a pickle, which runs code when loaded. Retrain it "
            f"(`python -m lympho train`), or load it with --trust-pickle (the Score page: \"Trust "
            f"this old model file\") only if you trust whoever made it")
    import joblib

    return joblib.load(path)
