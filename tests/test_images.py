"""Image decoding (``data.read_image``, used by extraction, the dashboard and uploads alike):
unusual valid images converted correctly, bombs and disguised files refused before decoding."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lympho.data import MAX_IMAGE_PIXELS, CohortError, check_image, read_image
from lympho.encoders.preprocessing import Preprocessing
from tests.test_uploads import bomb_png

RED, WHITE = (255, 0, 0), (255, 255, 255)


def saved(tmp_path, name, image, **options):
    path = tmp_path / name
    image.save(path, **options)
    return path


def pixel(path, xy=(0, 0)):
    return read_image(path).getpixel(xy)


def close(actual, expected, tolerance=12):
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected))


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    grey = Image.fromarray(np.full((8, 8), 30000, dtype=np.uint16))
    assert grey.mode.startswith("I;16")
    path = saved(tmp_path, "deep.png", grey)
    assert Image.open(path).mode.startswith("I")
    assert close(pixel(path), (117, 117, 117), 1)  # 30000 / 257, not 255 (clipped)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = saved(tmp_path, "print.jpg", Image.new("CMYK", (16, 16), (0, 255, 255, 0)), quality=95)
    assert Image.open(path).mode == "CMYK"
    assert close(pixel(path, (8, 8)), RED, 20)


def test_transparency_is_composited_over_white(tmp_path):
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.putpixel((1, 1), 1)
    p_path = saved(tmp_path, "palette.png", palette, transparency=0)
    assert pixel(p_path) == WHITE and pixel(p_path, (1, 1)) == RED  # not black
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    rgba.putpixel((1, 1), (255, 0, 0, 255))
    rgba_path = saved(tmp_path, "rgba.png", rgba)
    assert pixel(rgba_path) == WHITE and pixel(rgba_path, (1, 1)) == RED


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), WHITE)
    image.paste(RED, (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = saved(tmp_path, "camera.jpg", image, exif=exif, quality=95)
    upright = read_image(path)
    assert upright.size == (20, 40)
    assert close(upright.getpixel((10, 5)), RED) and close(upright.getpixel((10, 35)), WHITE)


@pytest.mark.parametrize("name, options", [("cell.webp", {"lossless": True}), ("cell.gif", {}),
                                           ("cell.tif", {})])
def test_webp_and_the_first_frame_of_multi_frame_files(tmp_path, name, options):
    frames = [Image.new("RGB", (16, 16), colour) for colour in (RED, (0, 0, 255), (0, 255, 0))]
    path = tmp_path / name
    frames[0].save(path, save_all=name != "cell.webp", append_images=frames[1:], **options)
    if name != "cell.webp":
        assert getattr(Image.open(path), "n_frames", 1) == 3
    assert close(pixel(path, (8, 8)), RED)


def test_tiny_and_large_images_feed_the_extractor(tmp_path):
    tiny = saved(tmp_path, "tiny.png", Image.new("RGB", (1, 1), RED))
    large = saved(tmp_path, "large.png", Image.new("RGB", (5000, 4000), RED), compress_level=1)
    for path in (tiny, large):
        check_image(path)
        array = Preprocessing().load(path)
        assert array.shape == (224, 224, 3) and close(array[112, 112], RED)


@pytest.mark.parametrize("side", [30000, 8000])  # Pillow's own limit refuses 30000^2, not 8000^2
def test_decompression_bombs_are_refused_from_the_header(tmp_path, side):
    assert side * side > MAX_IMAGE_PIXELS
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(side, side))
    assert path.stat().st_size < 200
    for read in (check_image, read_image, Preprocessing().load):
        with pytest.raises(CohortError, match=r"bomb\.png: image too large \("):
            read(path)


@pytest.mark.parametrize("content", [
    b"",
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"></svg>',
    b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>",
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",  # Pillow's EPS plugin is never used
])
def test_disguised_files_are_refused(tmp_path, content):
    path = tmp_path / "cell.jpg"
    path.write_bytes(content)
    for read in (check_image, read_image):
        with pytest.raises(CohortError, match=r"cell\.jpg: not a readable image"):
            read(path)


def test_every_image_file_is_opened_by_the_one_decoder():
    """Only lympho/data.py calls Pillow's Image.open: everything else goes through
    ``open_image``/``read_image`` (allowed formats, the pixel limit checked first)."""
    root = Path(__file__).resolve().parents[1]
    for source in [*sorted((root / "lympho").rglob("*.py")), root / "app.py", *sorted((root / "app_pages").glob("*.py"))]:
        if source.name != "data.py" or source.parent.name != "lympho":
            assert "Image.open(" not in source.read_text(), source
