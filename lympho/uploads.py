"""Check a patient's uploaded images before anything uses them.

The dashboard lets a user upload several image files, or a zip of them. Uploads are
untrusted: a name may carry a path (``../../x.jpg``), a zip may hold members that point
outside their folder, symlinks, or far more data than its size suggests, and a ``.jpg``
may not be an image at all. :func:`save_uploads` checks everything, writes the images into
a fresh temporary folder beside ``destination``, decodes every one, and only then moves
the folder into place: a refused upload leaves nothing behind and never touches files
that were already there. Every refusal is a :class:`~lympho.data.CohortError` naming the
offending upload (``archive.zip:member`` for a zip member).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

from lympho.data import IMAGE_SUFFIXES, CohortError, check_image, read_image

#: What the dashboard's file picker offers: the image suffixes, and zip.
UPLOAD_SUFFIXES = sorted(s.lstrip(".") for s in IMAGE_SUFFIXES | {".zip"})
#: Archive suffixes refused inside a zip: one level of archive only.
ARCHIVE_SUFFIXES = {".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar"}
#: A file name's limit in bytes (most file systems allow 255; room left for ``_n``).
MAX_NAME_BYTES = 200
#: Files that operating systems scatter into folders and archives: skipped silently.
JUNK_NAMES = {"thumbs.db", "desktop.ini", ".ds_store"}
_CHUNK = 1 << 20
_UNSAFE_CHARS = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


@dataclass
class _Item:
    """One image to write: from bytes in memory, or from a member of an open archive."""

    label: str  # how errors name it: "cell.jpg" or "cells.zip:a/cell.jpg"
    name: str  # sanitised file name, before making it unique
    data: bytes | None = None
    archive: zipfile.ZipFile | None = None
    info: zipfile.ZipInfo | None = None


def _suffixes() -> str:
    return ", ".join(sorted(IMAGE_SUFFIXES))


def _basename(name: str) -> str:
    return name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def _is_junk(basename: str) -> bool:
    return basename.lower() in JUNK_NAMES or basename.startswith("._")


def shown(name: str) -> str:
    """A name as messages show it: on one line, control characters written as escapes."""
    return _CONTROL_CHARS.sub(lambda m: repr(m.group())[1:-1], str(name))


def safe_name(name: str) -> str:
    """A plain, visible file name: no folders, no control or reserved characters, no
    leading dots, at most ``MAX_NAME_BYTES`` in UTF-8; the suffix in lower case. It may come
    back empty of a suffix (refused later)."""
    base = _UNSAFE_CHARS.sub("_", _basename(str(name))).strip().lstrip(".").strip()
    stem, suffix = os.path.splitext(base)
    suffix = suffix[:12]
    room = MAX_NAME_BYTES - len(suffix.encode())
    stem = stem.encode()[:room].decode(errors="ignore").rstrip(" .") or "image"
    if stem.upper() in _RESERVED:
        stem = f"_{stem}"
    return stem + suffix.lower()


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``stem_1.ext``, ``stem_2.ext`` ...; compared case-insensitively."""
    stem, suffix = os.path.splitext(name)
    candidate, n = name, 0
    while candidate.lower() in taken:
        n += 1
        candidate = f"{stem}_{n}{suffix}"
    taken.add(candidate.lower())
    return candidate


def _list_refused(label: str | None, refused: list[str]) -> CohortError:
    shown = ", ".join(refused[:10]) + (f" and {len(refused) - 10} more" if len(refused) > 10 else "")
    what = "is not an image file" if len(refused) == 1 else "are not image files"
    return CohortError(f"{shown} {what} (accepted: {_suffixes()}, or a .zip of them)", label)


def _open_zip(label: str, data: bytes) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as err:
        raise CohortError(f"not a readable zip archive ({err})", label) from None


def _unsafe_member(info: zipfile.ZipInfo) -> str | None:
    """Why a member must not be extracted at all, or None."""
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or _DRIVE.match(name):
        return "absolute path in archive"
    if ".." in PurePosixPath(name).parts:
        return "path escapes the archive's folder"
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        return "symbolic link in archive"
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        return "special file in archive"
    return None


def _zip_members(archive: zipfile.ZipFile, label: str) -> tuple[list[_Item], list[str]]:
    """The image members to extract, and the names of non-image members (refused)."""
    items, refused = [], []
    for info in archive.infolist():
        member = f"{label}:{shown(info.filename)}"
        problem = _unsafe_member(info)
        if problem:
            raise CohortError(f"{problem}; refusing the whole archive", member)
        parts = PurePosixPath(info.filename.replace("\\", "/")).parts
        if info.is_dir() or not parts or parts[0] == "__MACOSX" \
                or any(p.startswith(".") for p in parts) or _is_junk(parts[-1]):
            continue
        if info.flag_bits & 0x1:
            raise CohortError("encrypted member; upload an archive without a password", member)
        name = safe_name(parts[-1])
        if os.path.splitext(name)[1] in ARCHIVE_SUFFIXES:
            raise CohortError("archive inside the archive; upload one zip of images", member)
        if os.path.splitext(name)[1] not in IMAGE_SUFFIXES:
            refused.append(shown(info.filename))
            continue
        items.append(_Item(member, name, archive=archive, info=info))
    return items, refused


def _check_image(path: Path, label: str) -> None:
    """Decode the whole image exactly as the feature extractor will (``data.read_image``):
    allowed formats only, the pixel limit checked from the header first."""
    try:
        check_image(path)
        read_image(path)
    except CohortError as err:
        raise CohortError(err.message.replace(str(path), label), label) from None  # never show staging


def _copy_member(item: _Item, target: Path, budget: int) -> int:
    """Extract one member, counting bytes: stop at its declared size or the total budget."""
    declared = item.info.file_size
    written = 0
    try:
        with item.archive.open(item.info) as source, open(target, "xb") as out:
            while chunk := source.read(_CHUNK):
                written += len(chunk)
                if written > declared:
                    raise CohortError("member is larger than its header declares", item.label)
                if written > budget:
                    raise CohortError("archive holds more data than allowed", item.label)
                out.write(chunk)
    except CohortError:
        raise
    except Exception as err:  # BadZipFile (bad CRC), zlib/lzma errors, unsupported methods ...
        raise CohortError(f"damaged or unsupported archive member ({type(err).__name__}: {err})",
                          item.label) from None
    return written


def _check_destination(destination: Path) -> None:
    if destination.is_symlink() or (destination.exists() and (
            not destination.is_dir() or any(destination.iterdir()))):
        raise CohortError("already exists and is not an empty folder; not writing into it", destination)


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and missing ancestors; return those created, outermost first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir()
    return list(reversed(missing))


def save_uploads(files: Iterable[tuple[str, bytes]], destination: Path | str,
                 max_files: int = 500, max_total_bytes: int = 200 * 2**20) -> list[Path]:
    """Check uploaded images and save them into the new folder ``destination``.

    ``files``: ``(name, data)`` pairs, each an image file or a ``.zip`` of images.
    Plain files keep their base name, made safe; zip members are flattened into
    ``destination`` (nested folders dropped); clashing names become ``name_1.jpg`` ...
    Skipped silently: ``__MACOSX/``, hidden files and folders, ``Thumbs.db``,
    ``desktop.ini``. Refused: non-image files (all listed in one message), files that do
    not decode as images, zip members with an absolute path, a ``..`` component or a
    symlink, encrypted or damaged archives, more than ``max_files`` images or more than
    ``max_total_bytes`` of image data (a zip's declared sizes are checked before
    extracting, and the bytes actually extracted are counted too), and no image at all.

    ``destination`` must not exist, or be an empty folder. Returns the saved paths in
    upload order. Nothing is written anywhere unless every file passes.
    """
    destination = Path(destination)
    _check_destination(destination)

    # Pass 1: names, kinds, counts and declared sizes; nothing is written yet.
    items: list[_Item] = []
    refused: list[str] = []
    declared = 0
    for name, data in files:
        label = shown(name)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise CohortError(f"expected the file's bytes, got {type(data).__name__}", label)
        data = bytes(data)
        base = _basename(label)
        if _is_junk(base):
            continue
        if base.lower().endswith(".zip"):
            members, junk = _zip_members(_open_zip(label, data), label)
            refused += [f"{label}:{m}" for m in junk]
            new_items, new_bytes = members, sum(m.info.file_size for m in members)
        else:
            clean = safe_name(base)
            if os.path.splitext(clean)[1] not in IMAGE_SUFFIXES:
                refused.append(label)
                continue
            new_items, new_bytes = [_Item(label, clean, data=data)], len(data)
        items += new_items
        declared += new_bytes
        if len(items) > max_files:
            raise CohortError(f"too many images: more than {max_files} in one upload", label)
        if declared > max_total_bytes:
            raise CohortError(f"upload too large: more than {max_total_bytes / 2**20:.0f} MiB of images "
                              f"(declared sizes, checked before extracting)", label)
    if refused:
        raise _list_refused(refused[0] if len(refused) == 1 else None, refused)
    if not items:
        raise CohortError(f"no images in the upload (accepted: {_suffixes()}, or a .zip of them)")

    # Pass 2: write into a private staging folder beside destination, check, move into place.
    created = _make_parents(destination.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.upload-", dir=destination.parent))
    try:
        taken: set[str] = set()
        names, budget = [], max_total_bytes
        for item in items:
            target = staging / _unique(item.name, taken)
            if item.data is not None:
                target.write_bytes(item.data)
                budget -= len(item.data)
            else:
                budget -= _copy_member(item, target, budget)
            _check_image(target, item.label)
            names.append(target.name)
        _check_destination(destination)
        try:
            os.replace(staging, destination)  # POSIX: atomically replaces an empty folder
        except OSError:
            if not destination.is_dir() or any(destination.iterdir()):
                raise CohortError("appeared meanwhile and is not empty; not writing into it",
                                  destination) from None
            destination.rmdir()
            os.replace(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    return [destination / name for name in names]
