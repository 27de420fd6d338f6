"""Load and validate a lymphocytosis cohort in the challenge's own layout.

The layout, exactly as the challenge distributes it::

    <root>/trainset/trainset_true.csv   ID,LABEL,GENDER,DOB,LYMPH_COUNT
    <root>/trainset/<ID>/*.jpg          one folder of lymphocyte crops per patient
    <root>/testset/testset_data.csv     same columns, LABEL = -1 (unknown)
    <root>/testset/<ID>/*.jpg
    <root>/clinical_annotation.csv      both splits in one table (not needed here)

Every problem is raised as a :class:`CohortError` that names the file, the line
and the field, so a user pointing the tool at a broken download knows what to fix.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lympho.synthetic import demo_cohort_dir

if TYPE_CHECKING:  # pandas is imported where used: the CLI's --help never needs it
    import pandas as pd

#: The cohort's sampling date: its patients' ages are taken on this fixed date (the cohort was
#: collected before 2020), so that every result never drifts with the calendar. The models'
#: age is the age at sampling: a scored patient's is taken on its own sampling date.
REFERENCE_DATE = date(2020, 1, 1)
#: Ages (years) above this are refused; above PLAUSIBLE_AGE they load with a warning.
MAX_AGE, PLAUSIBLE_AGE = 120.0, 110.0
#: Lymphocyte counts (x 10^9/L) above this are refused (a unit slip: per microlitre);
#: above PLAUSIBLE_LYMPH_COUNT they load with a warning. The real cohort spans 3.9-295.
MAX_LYMPH_COUNT, PLAUSIBLE_LYMPH_COUNT = 1000.0, 500.0
#: Cross-validation settings: the (lowest, highest) value accepted.
SETTING_BOUNDS = {"folds": (2, 100), "repeats": (1, 1000), "seed": (0, 2**32 - 1)}

SPLITS = {"train": ("trainset", "trainset_true.csv"), "test": ("testset", "testset_data.csv")}
COLUMNS = ("ID", "LABEL", "GENDER", "DOB", "LYMPH_COUNT")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
#: The only Pillow decoders that ever see an image file, cohort or upload: keeps untrusted
#: bytes away from every other plugin (EPS, for one, would hand the file to Ghostscript).
#: JPEG covers MPO (camera JPEGs).
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF")
#: Larger images are refused from their header, before any pixel is decoded (a whole smear
#: photograph is ~50 Mpx at most; a decompression bomb declares far more).
MAX_IMAGE_PIXELS = 50_000_000
# Both formats occur in the real files: "11/3/1933" (M/D/YYYY) and "28-04-1943".
DATE_FORMATS = ("%m/%d/%Y", "%d-%m-%Y", "%Y-%m-%d")
UNKNOWN_LABEL = -1


class CohortError(ValueError):
    """Bad input, located precisely: ``path``, 1-based CSV ``line`` and ``field``."""

    def __init__(self, message: str, path: Path | str | None = None,
                 line: int | None = None, field: str | None = None):
        self.message, self.path, self.line, self.field = message, path, line, field
        where = [str(p) for p in (path,) if p is not None]
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


@dataclass(frozen=True)
class Patient:
    """One patient: clinical values and the paths of their lymphocyte images."""

    id: str
    split: str
    label: int  # 0 reactive, 1 malignant, -1 unknown
    gender: str  # "M" or "F"
    age: float  # years at sampling_date
    lymph_count: float  # x 10^9 / L
    images: tuple[Path, ...]
    dob: date | None = None
    sampling_date: date = REFERENCE_DATE  # the cohort's; a scored patient's own


@dataclass
class Cohort:
    """All patients of one data directory (or of the synthetic demo)."""

    root: Path
    patients: list[Patient]
    synthetic: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"synthetic demo ({self.root})" if self.synthetic else str(self.root)

    def select(self, split: str = "train") -> list[Patient]:
        """Patients of ``split``: "train", "test" or "all"."""
        return [p for p in self.patients if split == "all" or p.split == split]

    def labelled(self) -> list[Patient]:
        return [p for p in self.patients if p.label != UNKNOWN_LABEL]

    def frame(self) -> pd.DataFrame:
        """One row per patient: the clinical table, with image counts."""
        import pandas as pd

        return pd.DataFrame([{
            "id": p.id, "split": p.split, "label": p.label, "gender": p.gender,
            "age": p.age, "lymph_count": p.lymph_count, "n_images": len(p.images),
        } for p in self.patients])


LABEL_NAMES = {0: "reactive", 1: "malignant", UNKNOWN_LABEL: "unknown"}


def overview(cohort: Cohort) -> pd.DataFrame:
    """Patients, images and median clinical values per split and label."""
    frame = cohort.frame().assign(label=lambda f: f.label.map(LABEL_NAMES))
    return frame.groupby(["split", "label"]).agg(
        patients=("id", "size"), images=("n_images", "sum"), min_images=("n_images", "min"),
        max_images=("n_images", "max"), median_age=("age", "median"),
        median_count=("lymph_count", "median")).reset_index()


def clinical_matrix(patients: list[Patient], log_count: bool = True) -> np.ndarray:
    """Clinical features ``[age, male, lymph_count]``; counts span 2-300, so log helps."""
    count = np.array([p.lymph_count for p in patients], dtype=np.float64)
    return np.column_stack([
        [p.age for p in patients],
        [1.0 if p.gender == "M" else 0.0 for p in patients],
        np.log(count) if log_count else count,
    ])


def clinical_names(log_count: bool = True) -> list[str]:
    return ["age", "male", "log_lymph_count" if log_count else "lymph_count"]


#: Design-matrix columns that are categorical (binary): never interpolated by SMOTE.
CATEGORICAL_NAMES = ("male",)


def categorical_columns(names: list[str]) -> list[int]:
    """Indices of the categorical columns (:data:`CATEGORICAL_NAMES`) among ``names``."""
    return [i for i, name in enumerate(names) if name in CATEGORICAL_NAMES]


def parse_dob(text: str, path=None, line=None, field: str = "DOB") -> date:
    """Parse a date of birth (or another date, named by ``field``) in any format found in the
    challenge files."""
    for fmt in DATE_FORMATS:
        try:
            return datetime.strptime(text.strip(), fmt).date()
        except ValueError:
            continue
    raise CohortError(f"unparseable date {text!r} (expected M/D/YYYY, DD-MM-YYYY or YYYY-MM-DD)",
                      path, line, field)


def _located(message: str, path=None, line=None, field=None) -> str:
    """A warning worded like a :class:`CohortError`: ``file, line N, field F: message``."""
    return str(CohortError(message, path, line, field))


def parse_id(text: str, path=None, line=None) -> str:
    """A patient ID: a plain folder name, never a path. Refused: empty, ``.``, ``..``, and
    any path separator, NUL or other control character (an ID names its image folder
    inside its split's folder and must not lead out of it)."""
    pid = str(text).strip()
    if not pid:
        raise CohortError("empty patient ID", path, line, "ID")
    if pid in (".", "..") or any(c in pid for c in "/\\") or any(ord(c) < 32 or ord(c) == 127 for c in pid):
        raise CohortError(f"patient ID {pid!r} is not a plain name (no path, separator or control "
                          f"character)", path, line, "ID")
    return pid


def check_age(age, path=None, line=None, field: str = "age") -> float:
    """``age`` (years) as a float; refused unless finite and between 0 and :data:`MAX_AGE`."""
    try:
        value = float(age)
    except (TypeError, ValueError):
        raise CohortError(f"non-numeric age {age!r}", path, line, field) from None
    if not 0 <= value <= MAX_AGE:  # NaN fails too
        raise CohortError(f"age must be between 0 and {MAX_AGE:.0f} years, got {value:.1f}", path, line, field)
    return value


def age_at(dob: date, sampling_date: date = REFERENCE_DATE, path=None, line=None) -> float:
    """Age in years on ``sampling_date``, the one age the models use: the age at sampling
    (for the cohort, at :data:`REFERENCE_DATE`). A date of birth after the sampling date, or
    an age above :data:`MAX_AGE`, is refused (field ``DOB``)."""
    if dob > sampling_date:
        raise CohortError(f"date of birth {dob} is after the sampling date {sampling_date} (a negative age)",
                          path, line, "DOB")
    return check_age((sampling_date - dob).days / 365.25, path, line, "DOB")


def check_sampling_date(sampling_date: date, today: date | None = None) -> date:
    """``sampling_date``, refused when after ``today`` (default: the current date)."""
    today = date.today() if today is None else today
    if sampling_date > today:
        raise CohortError(f"sampling date {sampling_date} is in the future (today is {today})",
                          field="sampling date")
    return sampling_date


def parse_sampling_date(text: str) -> date:
    """A typed sampling date (formats of :func:`parse_dob`), refused in the future."""
    return check_sampling_date(parse_dob(text, field="sampling date"))


def age_warning(age: float, path=None, line=None, field: str = "age") -> str | None:
    """A warning naming the field for an age above :data:`PLAUSIBLE_AGE`, else None."""
    if age <= PLAUSIBLE_AGE:
        return None
    return _located(f"age {age:.1f} years is implausible (above {PLAUSIBLE_AGE:.0f}); check the date of birth",
                    path, line, field)


def lymph_count_warning(count: float, path=None, line=None, field: str = "LYMPH_COUNT") -> str | None:
    """A warning naming the field for a count above :data:`PLAUSIBLE_LYMPH_COUNT`, else None."""
    if count <= PLAUSIBLE_LYMPH_COUNT:
        return None
    return _located(f"lymphocyte count {count:g} x10^9/L is implausible (above {PLAUSIBLE_LYMPH_COUNT:.0f}); "
                    f"check the value and its unit", path, line, field)


def _unit_number(value, field: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CohortError(f"non-numeric {field} {value!r}", field=field) from None
    if not 0 < number <= 1:  # NaN fails too
        raise CohortError(f"{field} must be a finite number in (0, 1], got {value!r}", field=field)
    return number


def check_threshold(threshold, field: str = "threshold") -> float:
    """A decision threshold (malignant when ``probability >= threshold``) as a float, in
    (0, 1]: 0 would call every patient malignant whatever the model says, and anything above
    1 (or NaN) every patient reactive. Else a :class:`CohortError` (a ValueError) naming ``field``."""
    return _unit_number(threshold, field)


def check_sensitivity(sensitivity, field: str = "sensitivity") -> float:
    """A target sensitivity as a float, in (0, 1]; else a :class:`CohortError` naming ``field``."""
    return _unit_number(sensitivity, field)


def check_setting(name: str, value) -> int:
    """A cross-validation setting (``folds``, ``repeats`` or ``seed``) as an int within
    :data:`SETTING_BOUNDS`; else a ValueError naming it."""
    low, high = SETTING_BOUNDS[name]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return int(value)


def parse_gender(text: str, path=None, line=None) -> str:
    gender = text.strip().upper()  # the real files write one "f"
    if gender not in ("M", "F"):
        raise CohortError(f"unknown gender {text!r} (expected M or F)", path, line, "GENDER")
    return gender


def parse_lymph_count(text: str, path=None, line=None) -> float:
    try:
        count = float(text)
    except ValueError:
        raise CohortError(f"non-numeric lymphocyte count {text!r}", path, line, "LYMPH_COUNT") from None
    if not math.isfinite(count):
        raise CohortError(f"lymphocyte count must be a finite number, got {text!r}", path, line, "LYMPH_COUNT")
    if count <= 0:
        raise CohortError(f"lymphocyte count must be positive, got {text!r}", path, line, "LYMPH_COUNT")
    if count > MAX_LYMPH_COUNT:
        raise CohortError(f"lymphocyte count must be at most {MAX_LYMPH_COUNT:.0f} x10^9/L, got {count:g} "
                          f"(check the unit: x10^9/L, not per microlitre)", path, line, "LYMPH_COUNT")
    return count


def parse_label(text: str, path=None, line=None) -> int:
    """0, 1 or -1 (``1.0`` is 1); anything else, ``0.7`` included, is refused."""
    try:
        label = float(text)
    except ValueError:
        label = None
    if label not in (0, 1, UNKNOWN_LABEL):
        raise CohortError(f"label must be 0, 1 or -1 (unknown), got {text!r}", path, line, "LABEL")
    return int(label)


def _is_image_name(name: str) -> bool:
    """An image file's name: an image suffix, not hidden (.DS_Store ...), not Thumbs.db."""
    dot = name.rfind(".")
    return dot > 0 and name[0] != "." and name[dot:].lower() in IMAGE_SUFFIXES


def _children(folder: Path, names: list[str]) -> list[Path]:
    """``folder / name`` for every name, at a fraction of its cost where pathlib has the child
    join its ``iterdir`` uses (Python 3.11 and 3.12); on 3.11 each path's string is set at once
    (3.12 sets it itself), so that the hash index's ``str()`` of each costs nothing."""
    child = getattr(folder, "_make_child_relpath", None)
    if child is None:
        return [folder / name for name in names]
    paths = [child(name) for name in names]
    if sys.version_info < (3, 12) and folder.name:  # not "/" nor ".", whose children's strings differ
        base = str(folder)
        for path, name in zip(paths, names):
            path._str = f"{base}/{name}"
    return paths


def list_images(folder: Path) -> list[Path]:
    """Image files of a patient folder, sorted, skipping hidden files (.DS_Store ...).

    One directory read, whose entries carry their types (no stat per file on most file
    systems), and cheap paths (:func:`_children`): a few microseconds an image."""
    with os.scandir(folder) as entries:
        names = sorted(entry.name for entry in entries if _is_image_name(entry.name) and entry.is_file())
    return _children(folder, names)


def open_image(path) -> Image.Image:
    """Open ``path`` (or a binary file object) with the allowed decoders only, refusing an
    oversized image from its header alone (nothing is decoded yet). Every decoding of an
    image file in this package starts here."""
    img = Image.open(path, formats=IMAGE_FORMATS)
    if img.width * img.height > MAX_IMAGE_PIXELS:
        img.close()
        raise CohortError(f"image too large ({img.width} x {img.height} pixels; at most "
                          f"{MAX_IMAGE_PIXELS / 1e6:.0f} million)", path)
    return img


def _unreadable(err: Exception, path: Path) -> CohortError:
    if isinstance(err, UnidentifiedImageError):
        return CohortError(f"not a readable image (not a {', '.join(IMAGE_FORMATS)} file)", path)
    if isinstance(err, Image.DecompressionBombError):
        return CohortError(f"image too large (more than {MAX_IMAGE_PIXELS / 1e6:.0f} million pixels declared; "
                           f"a decompression bomb?)", path)
    return CohortError(f"not a readable image ({type(err).__name__}: {err})", path)


def check_image(path: Path) -> None:
    """Read an image's header; a truncated, foreign or oversized file fails here, not mid-run."""
    try:
        with open_image(path) as img:
            img.verify()
    except CohortError:
        raise
    except Exception as err:  # Pillow raises many types on hostile data; all mean "refuse"
        raise _unreadable(err, path) from None


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB of any mode: 16/32-bit grey scaled down (not clipped to white), transparency
    composited over white (a smear's background), CMYK and palettes converted."""
    if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        grey = np.asarray(img, dtype=np.float64) / 257.0  # 16-bit range to 8-bit
        return Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8)).convert("RGB")
    if "A" in img.mode or "transparency" in img.info:
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return img.convert("RGB")


def read_image(path: Path, draft: int | None = None) -> Image.Image:
    """Decode an image as RGB, exactly as the feature extractor sees it: the first frame of
    an animation or multi-page file, turned upright by its EXIF orientation. ``draft``: a
    JPEG may be decoded at a reduced scale (in the DCT domain) no smaller than that many
    pixels a side, for callers that downscale anyway."""
    try:
        with open_image(path) as img:
            if draft and img.format == "JPEG":
                img.draft("RGB", (draft, draft))  # decode at a reduced scale, at least ``draft`` px
            return _to_rgb(ImageOps.exif_transpose(img))
    except CohortError:
        raise
    except Exception as err:  # Pillow raises many types on hostile data; all mean "refuse"
        raise _unreadable(err, path) from None


def read_split_csv(csv_path: Path) -> pd.DataFrame:
    import pandas as pd

    if not csv_path.is_file():
        raise CohortError("missing clinical CSV", csv_path)
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise CohortError(f"not a readable CSV ({err})", csv_path) from None
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise CohortError(f"missing column(s) {', '.join(missing)}; found {list(table.columns)}",
                          csv_path, 1)
    return table


def parse_row(row: pd.Series, split: str, folder: Path, csv_path: Path, line: int,
              verify_images: bool) -> tuple[Patient, list[str]]:
    """One CSV row as a :class:`Patient`, and the warnings its implausible values raise."""
    pid = parse_id(row["ID"], csv_path, line)
    dob = parse_dob(row["DOB"], csv_path, line)
    age = age_at(dob, REFERENCE_DATE, csv_path, line)
    count = parse_lymph_count(row["LYMPH_COUNT"], csv_path, line)
    patient_dir = folder / pid
    if not patient_dir.is_dir():
        raise CohortError(f"patient {pid} has no image folder {patient_dir}", csv_path, line, "ID")
    images = list_images(patient_dir)
    if not images:
        raise CohortError(f"patient {pid}'s image folder is empty", patient_dir)
    if verify_images:
        for image in images:
            check_image(image)
    patient = Patient(
        id=pid, split=split, label=parse_label(row["LABEL"], csv_path, line),
        gender=parse_gender(row["GENDER"], csv_path, line), dob=dob, age=age,
        lymph_count=count, images=tuple(images),
    )
    warnings = [age_warning(age, csv_path, line, "DOB"), lymph_count_warning(count, csv_path, line)]
    return patient, [w for w in warnings if w]


def load_split(root: Path, split: str, verify_images: bool) -> tuple[list[Patient], list[str]]:
    folder_name, csv_name = SPLITS[split]
    folder, csv_path = root / folder_name, root / folder_name / csv_name
    table = read_split_csv(csv_path)
    patients, seen, warnings = [], {}, []
    for index, row in table.iterrows():
        line = index + 2  # header is line 1
        patient, row_warnings = parse_row(row, split, folder, csv_path, line, verify_images)
        warnings += row_warnings
        if patient.id in seen:
            raise CohortError(f"duplicate patient ID {patient.id} (first on line {seen[patient.id]})",
                              csv_path, line, "ID")
        seen[patient.id] = line
        patients.append(patient)
    unlisted = sorted(p.name for p in folder.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and p.name not in seen)
    if unlisted:
        warnings.append(f"{folder}: folder(s) not listed in {csv_name}, ignored: {', '.join(unlisted)}")
    return patients, warnings


def load_cohort(root: Path | str, verify_images: bool = True, synthetic: bool = False) -> Cohort:
    """Load a cohort directory; ``testset/`` is optional, ``trainset/`` is not.

    ``verify_images`` reads every image's header (:func:`check_image`), so that an unreadable
    file is refused now, by name. A caller that passes False must check the images it uses
    itself: :meth:`lympho.features.FeatureExtractor.extract` checks those it has to decode
    before it decodes any, and a file whose content's features are cached was decoded before."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise CohortError("data directory not found", root)
    if not (root / "trainset").is_dir():
        raise CohortError("missing trainset/ directory (expected the challenge layout)", root)
    patients, warnings = [], []
    for split, (folder_name, _) in SPLITS.items():
        if split == "test" and not (root / folder_name).is_dir():
            continue
        split_patients, split_warnings = load_split(root, split, verify_images)
        patients += split_patients
        warnings += split_warnings
    duplicates = [pid for pid, n in Counter(p.id for p in patients).items() if n > 1]
    if duplicates:
        raise CohortError(f"patient ID(s) in both trainset and testset: {', '.join(sorted(duplicates))}", root)
    return Cohort(root=root, patients=patients, synthetic=synthetic, warnings=warnings)


def default_cache_dir() -> Path:
    """``LYMPHO_CACHE``, else the user's cache folder (XDG on Linux)."""
    if os.environ.get("LYMPHO_CACHE"):
        return Path(os.environ["LYMPHO_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lympho"


class CacheError(RuntimeError):
    """A cache directory that cannot be created or written, or that filled up."""


def cache_error(directory: Path | str, err: BaseException) -> CacheError:
    """One line naming the directory, the reason and what to do."""
    reason = getattr(err, "strerror", None) or str(err)
    return CacheError(f"cache directory {directory}: cannot be written ({reason}); what is already stored there "
                      f"stays usable: free some space, or choose another with --cache-dir or LYMPHO_CACHE")


def usable_cache_dir(directory: Path | str) -> Path:
    """``directory``, created if missing and checked to be writable (a probe file is
    written and removed); else a :class:`CacheError` naming it."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory) as probe:
            probe.write(b"probe")
    except OSError as err:
        raise cache_error(directory, err) from None
    return directory


def resolve_cohort(data: Path | str | None = None, cache_dir: Path | None = None,
                   verify_images: bool = True) -> Cohort:
    """The cohort to use: ``data``, else ``LYMPHO_DATA``, else the synthetic demo.
    ``verify_images=False`` leaves the images' headers to the caller (:func:`load_cohort`)."""
    data = data or os.environ.get("LYMPHO_DATA")
    if data:
        return load_cohort(data, verify_images)
    return load_cohort(demo_cohort_dir(cache_dir or default_cache_dir()), verify_images, synthetic=True)


RECENT_FILE = "recent_data_dirs.json"


def remembered_data_dirs(cache_dir: Path) -> list[str]:
    """Cohort directories used before, most recent first (a damaged list is just empty)."""
    try:
        entries = json.loads((Path(cache_dir) / RECENT_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [e for e in entries if isinstance(e, str)] if isinstance(entries, list) else []


def remember_data_dir(cache_dir: Path, directory: Path | str, keep: int = 8) -> None:
    entries = [str(directory)] + [e for e in remembered_data_dirs(cache_dir) if e != str(directory)]
    write_text_atomic(Path(cache_dir) / RECENT_FILE, json.dumps(entries[:keep]))


def write_text_atomic(path: Path | str, text: str) -> None:
    """Write via a temporary sibling and rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        try:
            tmp.write(text)
            tmp.flush()
        except BaseException:  # a full disk: leave no partial temporary file behind
            tmp.close()
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, path)
