"""The warm extraction path: ``extract`` reads no image header while loading the cohort.

An image whose content's features are cached was decoded when they were stored, so a fully
cached run opens no image file at all; the images that have to be decoded have their headers
read by the extractor before any is decoded, so an unreadable file is still refused by name
before anything is computed, on a cold run as on a warm one.
"""

import os
import subprocess
import sys
import time

import diskcache
import pytest

from lympho.cli import main
from lympho.data import IMAGE_SUFFIXES
from lympho.synthetic import write_demo_cohort

#: Runs the CLI in a fresh interpreter with an audit hook that reports, on stderr and at once
#: (``python -m lympho`` may leave through ``os._exit``), every image file opened by any means:
#: Pillow, ``open``, ``Path.read_bytes``, ``os.open``.
OPEN_PROBE = """
import os, runpy, sys
SUFFIXES = {suffixes!r}
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        name = os.fsdecode(args[0])
        if os.path.splitext(name)[1].lower() in SUFFIXES:
            os.write(2, f"OPENED {{name}}\\n".encode())
sys.addaudithook(hook)
sys.argv = ["lympho", *{argv!r}]
runpy.run_module("lympho", run_name="__main__")
"""


def backdated(root):
    """``root``'s files dated a minute back, so that the hash index records them."""
    past = time.time() - 60
    for folder, _, files in os.walk(root):
        for name in files:
            os.utime(os.path.join(folder, name), (past, past))
    return root


@pytest.fixture
def tiny(tmp_path):
    return backdated(write_demo_cohort(tmp_path / "tiny", n_train=4, n_test=0, images_per_patient=(2, 3), seed=3))


def options(tiny, tmp_path):
    return ["extract", "--data", str(tiny), "--encoder", "morphology", "--cache-dir", str(tmp_path / "cache")]


def cached_entries(tmp_path) -> int:
    with diskcache.Cache(tmp_path / "cache" / "features") as features:
        return len(features)


def first_folder(tiny):
    return next(p for p in sorted((tiny / "trainset").iterdir()) if p.is_dir())


def refused(argv, capsys, name) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert f"{name}: not a readable image" in err and "images (" not in out


def test_an_unreadable_image_is_refused_by_name_cold_and_warm(tiny, tmp_path, capsys):
    argv = options(tiny, tmp_path)
    bad = first_folder(tiny) / "zz-broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    refused(argv, capsys, bad)  # cold: refused before any image is decoded
    assert cached_entries(tmp_path) == 0
    bad.unlink()
    assert main(argv) == 0 and " extracted, 0 cached)" in capsys.readouterr().out
    stored = cached_entries(tmp_path)
    bad.write_bytes(b"not a jpeg at all")  # warm: every other image cached
    refused(argv, capsys, bad)
    cached = sorted(first_folder(tiny).glob("0*.jpg"))[0]
    cached.write_bytes(b"GIF89a but cut short")  # a cached file overwritten (a new modification time)
    bad.unlink()
    refused(argv, capsys, cached)
    assert cached_entries(tmp_path) == stored


def opened_images(argv) -> tuple[list[str], str]:
    done = subprocess.run([sys.executable, "-c", OPEN_PROBE.format(argv=argv, suffixes=sorted(IMAGE_SUFFIXES))],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return [line for line in done.stderr.splitlines() if line.startswith("OPENED")], done.stdout


def test_a_fully_cached_run_opens_no_image_file(tiny, tmp_path, capsys):
    argv = options(tiny, tmp_path)
    assert main(argv) == 0 and "0 cached)" in capsys.readouterr().out
    opened, out = opened_images(argv)
    assert "(0 extracted, " in out and opened == []
    opened, out = opened_images([*argv, "--rehash"])  # the probe sees what it should: every file read again
    assert "(0 extracted, " in out and len(opened) == int(out.split()[0])


def test_the_cohort_walk_lists_what_pathlib_lists(tmp_path, monkeypatch):
    """Sorted image files only (no hidden file, folder, Thumbs.db or other suffix), as equal
    paths with equal strings, for an absolute, a relative and the current folder."""
    from pathlib import Path

    from lympho.data import list_images

    for name in ("b.jpg", "a.JPG", ".hidden.jpg", ".jpg", "Thumbs.db", "x.txt", "c.png", "z.", "B.jpeg", "noext"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.jpg").mkdir()
    (tmp_path / "link.jpg").symlink_to(tmp_path / "b.jpg")
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "gone")
    monkeypatch.chdir(tmp_path.parent)
    for folder in (tmp_path, Path(tmp_path.name), Path(".")):
        if folder == Path("."):
            monkeypatch.chdir(tmp_path)
        listed = list_images(folder)
        expected = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                          and not p.name.startswith("."))
        assert listed == expected and [str(p) for p in listed] == [str(p) for p in expected]
        assert [p.name for p in listed] == ["B.jpeg", "a.JPG", "b.jpg", "c.png", "link.jpg"]
