"""Uploaded images: accepted when they are images, refused clearly otherwise, never half-saved."""

import io
import re
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

from lympho.data import CohortError
from lympho.uploads import save_uploads


def image_bytes(fmt="PNG", color=(200, 30, 90), size=(16, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def make_zip(members) -> bytes:
    """``members``: (name or ZipInfo, bytes) pairs, written as given (no name clean-up)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG signature and header declaring ``width`` x ``height``, with a few bytes of data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def area(tmp_path):
    """The parent folder of every destination, with something precious already in it."""
    folder = tmp_path / "uploads"
    (folder / "earlier").mkdir(parents=True)
    (folder / "earlier" / "cell.png").write_bytes(image_bytes())
    return folder


def refused(area, files, match, **limits):
    before = snapshot(area)
    with pytest.raises(CohortError, match=match):
        save_uploads(files, area / "patient", **limits)
    assert snapshot(area) == before  # nothing written, nothing left behind, nothing touched
    return before


def test_several_images_are_saved_with_safe_unique_names(area):
    png, jpg = image_bytes(), image_bytes("JPEG")
    saved = save_uploads([("a.png", png), ("a.png", png), ("cell.JPG", jpg), ("../../up.png", png),
                          ("C:\\Users\\x\\win.png", png), (".hidden.png", png), ("Thumbs.db", b"junk")],
                         area / "patient")
    assert [p.name for p in saved] == ["a.png", "a_1.png", "cell.jpg", "up.png", "win.png", "hidden.png"]
    assert all(p.parent == area / "patient" and p.is_file() for p in saved)
    assert sorted(p.name for p in area.iterdir()) == ["earlier", "patient"]  # no staging left
    assert saved[2].read_bytes() == jpg


def test_an_existing_empty_destination_is_filled(area):
    (area / "patient").mkdir()
    assert len(save_uploads([("a.png", image_bytes())], area / "patient")) == 1


def test_missing_parents_are_created_and_removed_again_on_refusal(tmp_path):
    deep = tmp_path / "new" / "deeper" / "patient"
    with pytest.raises(CohortError, match="cell.jpg"):
        save_uploads([("ok.png", image_bytes()), ("cell.jpg", b"text, not an image")], deep)
    assert not (tmp_path / "new").exists()
    assert save_uploads([("ok.png", image_bytes())], deep)[0].is_file()


def test_non_images_are_refused_by_name(area):
    refused(area, [("a.png", image_bytes()), ("notes.txt", b"hello")], r"notes\.txt is not an image file")
    refused(area, [("report.pdf", b"%PDF"), ("notes.txt", b"hello")], r"report\.pdf, notes\.txt are not image")


def test_a_fake_jpg_is_refused(area):
    refused(area, [("a.png", image_bytes()), ("fake.jpg", b"just some text")],
            r"fake\.jpg: not a readable image")
    truncated = image_bytes("JPEG", size=(64, 64))[:200]
    refused(area, [("cut.jpg", truncated)], r"cut\.jpg: not a readable image")


def test_nothing_to_save_is_an_error(area):
    refused(area, [], "no images")
    refused(area, [("cells.zip", make_zip([("__MACOSX/._a.png", b"x"), (".DS_Store", b"x")]))], "no images")


def test_existing_destination_content_is_never_touched(area):
    (area / "patient").mkdir()
    (area / "patient" / "notes.txt").write_text("keep me")
    refused(area, [("a.png", image_bytes())], "not an empty folder")
    assert (area / "patient" / "notes.txt").read_text() == "keep me"


def test_a_zip_with_folders_and_mac_junk_is_flattened(area):
    png = image_bytes()
    archive = make_zip([("cells/", b""), ("cells/a/x.png", png), ("cells/b/x.png", png),
                        ("cells/b/deeper/y.jpeg", image_bytes("JPEG")), ("__MACOSX/cells/a/._x.png", b"junk"),
                        ("cells/.DS_Store", b"junk"), ("cells/Thumbs.db", b"junk"), ("cells/.git/z.png", b"junk")])
    saved = save_uploads([("cells.zip", archive), ("x.png", png)], area / "patient")
    assert [p.name for p in saved] == ["x.png", "x_1.png", "y.jpeg", "x_2.png"]
    assert sorted(p.name for p in (area / "patient").iterdir()) == ["x.png", "x_1.png", "x_2.png", "y.jpeg"]


def test_non_image_zip_members_and_corrupt_zips_are_refused(area):
    archive = make_zip([("cells/a.png", image_bytes()), ("cells/readme.txt", b"hi")])
    refused(area, [("cells.zip", archive)], r"cells\.zip:cells/readme\.txt is not an image file")
    refused(area, [("cells.zip", b"PK\x03\x04 not really a zip")], r"cells\.zip: not a readable zip")
    damaged = make_zip([("cells/a.png", image_bytes())])
    damaged = damaged[:60] + bytes(b ^ 0xFF for b in damaged[60:80]) + damaged[80:]
    refused(area, [("cells.zip", damaged)], r"cells\.zip")


@pytest.mark.parametrize("member, problem", [
    ("../evil.jpg", "escapes"),
    ("cells/../../evil.jpg", "escapes"),
    ("/tmp/evil.jpg", "absolute path"),
    ("C:/evil.jpg", "absolute path"),
    ("..\\evil.jpg", "escapes"),
])
def test_zip_slip_is_refused_and_nothing_is_written(area, member, problem):
    evil = Path("/tmp/evil.jpg")
    existed = evil.exists()
    archive = make_zip([("cells/ok.png", image_bytes()), (zipfile.ZipInfo(member), image_bytes("JPEG"))])
    assert member in zipfile.ZipFile(io.BytesIO(archive)).namelist()  # the name really is hostile
    outside = snapshot(area.parent)
    refused(area, [("cells.zip", archive)], re.escape(f"cells.zip:{member}") + f".*{problem}")
    assert snapshot(area.parent) == outside
    assert evil.exists() == existed


def test_symlink_members_are_refused(area):
    link = zipfile.ZipInfo("cells/link.png")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    refused(area, [("cells.zip", make_zip([("cells/ok.png", image_bytes()), (link, b"/etc/passwd")]))],
            r"cells\.zip:cells/link\.png: symbolic link")


def test_a_zip_bomb_is_refused_before_extracting(area):
    bomb = make_zip([("cells/ok.png", image_bytes()), ("cells/big.png", bytes(3 * 2**20))])
    assert len(bomb) < 2**16  # small on the wire, 3 MiB declared
    refused(area, [("cells.zip", bomb)], "upload too large", max_total_bytes=2**20)


def test_a_zip_whose_headers_understate_a_member_is_refused(area):
    archive = bytearray(make_zip([("cells/ok.png", image_bytes()), ("cells/big.png", bytes(3 * 2**20))]))
    # Patch the declared uncompressed size of big.png (local and central headers) to 100 bytes.
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = archive.rfind(signature)
        assert archive.rfind(b"cells/big.png") > start
        struct.pack_into("<I", archive, start + offset, 100)
    assert zipfile.ZipFile(io.BytesIO(bytes(archive))).getinfo("cells/big.png").file_size == 100
    refused(area, [("cells.zip", bytes(archive))], r"cells\.zip:cells/big\.png", max_total_bytes=2**20)


def test_too_many_files_are_refused(area):
    png = image_bytes()
    refused(area, [(f"{i}.png", png) for i in range(4)], "too many images", max_files=3)
    archive = make_zip([(f"cells/{i}.png", png) for i in range(4)])
    refused(area, [("cells.zip", archive)], r"cells\.zip: too many images", max_files=3)
    refused(area, [(f"{i}.png", png) for i in range(3)], "upload too large", max_total_bytes=2 * len(png))


def test_odd_member_names_are_saved_under_safe_names(area):
    png = image_bytes()
    names = ["cells/细胞 ünïcode.png", "cells/with spaces .png", "cells/new\nline.png", "cells/" + "a" * 246 + ".png",
             "cells/" + "é" * 240 + ".png", "cells/tab\there.PNG"]
    saved = save_uploads([("cells.zip", make_zip([(n, png) for n in names]))], area / "patient")
    assert [p.name for p in saved][:3] == ["细胞 ünïcode.png", "with spaces.png", "new_line.png"]
    assert all(len(p.name.encode()) <= 200 and p.suffix == ".png" and p.parent == area / "patient" for p in saved)
    assert len({p.name for p in saved}) == len(names)


def test_a_refused_odd_name_is_shown_on_one_line(area):
    refused(area, [("notes\nabout it.txt", b"x")], r"^notes\\nabout it\.txt: [^\n]* is not an image file[^\n]*$")


@pytest.mark.parametrize("inner", ["cells/inner.zip", "cells/more.tar.gz"])
def test_nested_archives_are_refused(area, inner):
    archive = make_zip([("cells/ok.png", image_bytes()), (inner, make_zip([("x.png", image_bytes())]))])
    refused(area, [("cells.zip", archive)], re.escape(f"cells.zip:{inner}") + ": archive inside the archive")


def test_an_image_bomb_inside_a_zip_is_refused_before_decoding(area):
    archive = make_zip([("cells/ok.png", image_bytes()), ("cells/bomb.png", bomb_png(30000, 30000))])
    refused(area, [("cells.zip", archive)], r"cells\.zip:cells/bomb\.png: image too large")


def test_webp_gif_and_camera_formats_are_accepted(area):
    saved = save_uploads([("a.webp", image_bytes("WEBP")), ("b.gif", image_bytes("GIF")),
                          ("c.tiff", image_bytes("TIFF"))], area / "patient")
    assert [p.name for p in saved] == ["a.webp", "b.gif", "c.tiff"]
