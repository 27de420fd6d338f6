"""Synthetic demo cohort: an embedded default so the app and the CLI work with no data at hand.

Everything written here is fake and clearly labelled as such (``demo-cohort-v1``): no real patient,
image or value is copied. The cohort mimics the challenge layout exactly::

    <root>/clinical_annotation.csv      ,ID,LABEL,GENDER,DOB,LYMPH_COUNT  (leading row index)
    <root>/trainset/trainset_true.csv   ID,LABEL,GENDER,DOB,LYMPH_COUNT
    <root>/testset/testset_data.csv     same columns, LABEL = -1
    <root>/{trainset,testset}/<ID>/000000.jpg ...  224x224 RGB smear crops

including the quirks of the real files: dates both as ``M/D/YYYY`` and ``DD-MM-YYYY``, one gender
written as a lowercase ``f``, train and test rows interleaved in the annotation file.

Planted signal, so that every part of the pipeline has something to learn:

* clinical: malignant patients are older (~73 +- 9 years vs ~52 +- 16) and have higher, wider
  lymphocyte counts (log-normal, median ~16 vs ~5.5 x10^9/L); the classes overlap.
* images: each crop is a pale pink smear with red blood cells and one central lymphocyte.
  A "malignant-looking" lymphocyte has a larger nucleus with an irregular, often cleaved outline,
  coarse clumped chromatin and a thin rim of cytoplasm; a "normal-looking" one has a smaller round
  nucleus, finer chromatin and abundant pale-blue cytoplasm. Bags are mixtures (malignant patients
  50-90 % malignant-looking cells, reactive patients 0-10 %), so the task is genuinely
  multiple-instance.

Generation is deterministic: the same arguments give byte-identical files.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # pandas is imported where used: the CLI's --help never needs it
    import pandas as pd

COHORT_NAME = "demo-cohort-v1"
MARKER = ".complete"  # written last: a cohort directory without it is incomplete
SIZE = 224
JPEG_QUALITY = 90
REFERENCE_YEAR = 2020  # ages are drawn relative to lympho.data.REFERENCE_DATE (2020-01-01)
MALIGNANT_SHARE = 0.7


def _colour(r: float, g: float, b: float) -> np.ndarray:
    """An RGB colour as a (3, 1, 1) column: images are drawn channel-first because numpy is
    slow on arrays whose innermost axis has length 3."""
    return np.array([r, g, b], np.float32).reshape(3, 1, 1)


# Colours close to those measured on real smears; cells over the background are modelled by
# their optical density (absorbance), so overlaps darken as they do under a microscope.
BACKGROUND = _colour(251, 226, 201)
RBC_RIM_OD = -np.log(_colour(190, 146, 170) / BACKGROUND)
RBC_PALLOR_OD = -np.log(_colour(228, 200, 196) / BACKGROUND)
PLATELET_OD = -np.log(_colour(150, 95, 170) / BACKGROUND)
NUCLEUS_DARK = _colour(52, 14, 98)
NUCLEUS_LIGHT = _colour(140, 88, 170)

PAD = 34  # margin so blood cells can be pasted half outside the frame without clipping logic
WINDOW = 128  # the lymphocyte is drawn in a central window only, to save time
_WY, _WX = np.mgrid[0:WINDOW, 0:WINDOW].astype(np.float32)
_RAMP = np.linspace(-1, 1, SIZE, dtype=np.float32)


@dataclass(frozen=True)
class _Look:
    """How one kind of lymphocyte is drawn (ranges are sampled per cell)."""
    nucleus_radius: tuple[float, float]
    cytoplasm_ratio: tuple[float, float]  # cell radius / nucleus radius
    wobble: float  # outline irregularity
    cleft_chance: float
    chromatin_grain: int  # noise grid size: fewer cells = coarser clumps
    chromatin_contrast: float
    cytoplasm_inner: tuple[float, float, float]
    cytoplasm_rim: tuple[float, float, float]


MALIGNANT_LOOK = _Look((30, 37), (1.06, 1.18), 0.07, 0.6, 9, 0.55,
                       (200, 172, 200), (165, 120, 180))
NORMAL_LOOK = _Look((19, 24), (1.45, 1.8), 0.025, 0.0, 24, 0.2,
                    (205, 196, 228), (150, 138, 200))


def write_demo_cohort(root: Path, n_train: int = 48, n_test: int = 8,
                      images_per_patient: tuple[int, int] = (12, 30), seed: int = 0,
                      progress: Callable[[int, int], None] | None = None) -> Path:
    """Write a complete synthetic cohort in the challenge layout under ``root``; return ``root``.
    ``progress(patients_done, patients_total)`` is called after each patient."""
    low, high = images_per_patient
    if n_train < 2 or n_test < 0 or not 1 <= low <= high:
        raise ValueError("need n_train >= 2, n_test >= 0 and 1 <= min <= max images per patient")
    root = Path(root)
    table_seed, *patient_seeds = np.random.SeedSequence(seed).spawn(1 + n_train + n_test)
    table = _clinical_table(n_train, n_test, np.random.default_rng(table_seed))
    _write_tables(root, table)
    for done, (row, patient_seed) in enumerate(zip(table.itertuples(), patient_seeds), 1):
        rng = np.random.default_rng(patient_seed)
        folder = root / ("testset" if row.test else "trainset") / row.ID
        _write_bag(folder, rng, bool(row.LABEL), int(rng.integers(low, high + 1)))
        if progress:
            progress(done, n_train + n_test)
    return root


def demo_cohort_ready(cache_dir: Path) -> bool:
    """Whether the demo cohort is already generated (so loading it is instant)."""
    return (Path(cache_dir) / COHORT_NAME / MARKER).is_file()


def demo_cohort_dir(cache_dir: Path, progress: Callable[[int, int], None] | None = None) -> Path:
    """``cache_dir/demo-cohort-v1``, generated once (atomically) if missing or incomplete."""
    target = Path(cache_dir) / COHORT_NAME
    if demo_cohort_ready(cache_dir):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build in a hidden sibling and rename it in: a half-written cohort never sits at `target`.
    staging = Path(tempfile.mkdtemp(prefix=f".{COHORT_NAME}.", dir=target.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the cohort is meant to be shared
        write_demo_cohort(staging, progress=progress)
        (staging / MARKER).touch()
        _publish(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _publish(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``; if another process got there first, keep theirs."""
    if target.exists() and not (target / MARKER).is_file():
        shutil.rmtree(target, ignore_errors=True)  # interrupted or outdated leftover
    try:
        os.replace(staging, target)
    except OSError:
        if not (target / MARKER).is_file():
            raise
        shutil.rmtree(staging)  # lost the race; the winner's files are identical anyway


# --- clinical tables ---------------------------------------------------------------------------

def _clinical_table(n_train: int, n_test: int, rng: np.random.Generator) -> pd.DataFrame:
    """One row per patient with the true label (test labels are hidden only when written)."""
    import pandas as pd

    n = n_train + n_test
    labels = np.concatenate([_labels(n_train, rng), _labels(n_test, rng)])
    table = pd.DataFrame({
        "ID": [f"P{i}" for i in rng.choice(np.arange(1, max(205, n) + 1), n, replace=False)],
        "LABEL": labels,
        "GENDER": _genders(n, rng),
        "DOB": _dates_of_birth(labels, rng),
        "LYMPH_COUNT": _lymph_counts(labels, rng),
        "test": np.arange(n) >= n_train,
    })
    return table.iloc[rng.permutation(n)].reset_index(drop=True)  # real files interleave splits


def _labels(n: int, rng: np.random.Generator) -> np.ndarray:
    """About 70 % malignant, in random order, with both classes present whenever n > 1."""
    n_malignant = min(max(round(MALIGNANT_SHARE * n), 1), n - 1) if n > 1 else n
    return rng.permutation(np.arange(n) < n_malignant).astype(int)


def _genders(n: int, rng: np.random.Generator) -> np.ndarray:
    genders = rng.choice(np.array(["M", "F"], dtype=object), n)
    genders[rng.integers(n)] = "f"  # the real annotation has one lowercase entry
    return genders


def _dates_of_birth(labels: np.ndarray, rng: np.random.Generator) -> list[str]:
    """Malignant patients are older; dates mix the two formats of the real files."""
    ages = np.where(labels == 1, np.clip(rng.normal(73, 9, labels.size), 40, 95),
                    np.clip(rng.normal(52, 16, labels.size), 18, 90))
    years = (REFERENCE_YEAR - ages).astype(int)
    months = rng.integers(1, 13, labels.size)
    days = rng.integers(1, 29, labels.size)  # every month has a 28th
    dashed = rng.random(labels.size) < 0.15
    first, second = rng.choice(labels.size, 2, replace=False)
    dashed[first], dashed[second] = True, False  # both formats always occur
    return [f"{d:02d}-{m:02d}-{y}" if dash else f"{m}/{d}/{y}"
            for y, m, d, dash in zip(years, months, days, dashed)]


def _lymph_counts(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Log-normal counts (x10^9/L): reactive ~5.5 and narrow, malignant ~16 and wide."""
    counts = np.where(labels == 1, rng.lognormal(np.log(16), 0.95, labels.size),
                      rng.lognormal(np.log(5.5), 0.35, labels.size))
    return np.clip(counts, 2.3, 295).round(2)


def _write_tables(root: Path, table: pd.DataFrame) -> None:
    """The three CSVs, byte-for-byte in the formats of the real challenge files."""
    columns = ["ID", "LABEL", "GENDER", "DOB", "LYMPH_COUNT"]
    public = table[columns].assign(LABEL=np.where(table["test"], -1, table["LABEL"]))
    for split in ("trainset", "testset"):
        (root / split).mkdir(parents=True, exist_ok=True)
    public.to_csv(root / "clinical_annotation.csv")  # keeps the unnamed index column
    public[~table["test"]].to_csv(root / "trainset" / "trainset_true.csv", index=False)
    public[table["test"]].to_csv(root / "testset" / "testset_data.csv", index=False)


# --- images ---------------------------------------------------------------------------------

def _write_bag(folder: Path, rng: np.random.Generator, malignant: bool, n_images: int) -> None:
    """A patient's crops: a mixture of malignant- and normal-looking lymphocytes."""
    folder.mkdir(parents=True, exist_ok=True)
    share = rng.uniform(0.5, 0.9) if malignant else rng.uniform(0.0, 0.1)
    sprites = [_red_cell_sprite(rng) for _ in range(8)]  # this slide's red cells
    stain = rng.normal(1.0, 0.03, (3, 1, 1)).astype(np.float32)  # slide-to-slide staining
    grain = 3 * rng.standard_normal((3, SIZE + 64, SIZE + 64), dtype=np.float32)  # sensor noise
    for i in range(n_images):
        look = MALIGNANT_LOOK if rng.random() < share else NORMAL_LOOK
        image = _smear(rng, look, sprites, stain, grain)
        image.save(folder / f"{i:06d}.jpg", format="JPEG", quality=JPEG_QUALITY)


def _smear(rng: np.random.Generator, look: _Look, sprites: list[tuple[np.ndarray, float]],
           stain: np.ndarray, grain: np.ndarray) -> Image.Image:
    """One 224x224 crop: background, red cells and platelets, the lymphocyte, then optics."""
    tilt = rng.normal(0, 0.015, 2).astype(np.float32)  # uneven illumination
    light = 1 + tilt[0] * _RAMP[:, None] + tilt[1] * _RAMP[None, :]
    rgb = light * BACKGROUND * np.exp(-_blood_cell_density(rng, sprites))  # Beer-Lambert
    centre = slice((SIZE - WINDOW) // 2, (SIZE + WINDOW) // 2)
    rgb[:, centre, centre] = _draw_lymphocyte(rng, look, rgb[:, centre, centre])
    rgb *= stain * rng.normal(1.0, 0.015, (3, 1, 1)).astype(np.float32)
    rgb = _defocus(rgb, np.float32(rng.uniform(0.08, 0.22)))
    y, x = rng.integers(0, 64, 2)  # a random window of the slide's noise: cheaper than fresh
    rgb += grain[:, y:y + SIZE, x:x + SIZE]
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8).transpose(1, 2, 0).copy())


def _defocus(rgb: np.ndarray, spread: np.float32) -> np.ndarray:
    """Mild blur: a separable 3-tap kernel, edges replicated (cheaper than a Gaussian blur)."""
    for axis in (1, 2):
        source = np.moveaxis(rgb, axis, 0)  # a view with the blurred axis first
        blurred = (1 - 2 * spread) * source
        blurred[1:] += spread * source[:-1]
        blurred[:-1] += spread * source[1:]
        blurred[[0, -1]] += spread * source[[0, -1]]
        rgb = np.moveaxis(blurred, 0, axis)
    return rgb


def _blood_cell_density(rng: np.random.Generator,
                        sprites: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """Optical density of red cells packed side by side, plus a few platelets."""
    density = np.zeros((3, SIZE + 2 * PAD, SIZE + 2 * PAD), np.float32)
    platelets = [(_platelet_sprite(rng), rng.integers(PAD, PAD + SIZE, 2))
                 for _ in range(rng.integers(0, 4))]
    for sprite, (y, x) in _pack_red_cells(rng, sprites, int(rng.integers(24, 38))) + platelets:
        half = sprite.shape[1] // 2
        density[:, y - half:y + half + 1, x - half:x + half + 1] += sprite
    return density[:, PAD:-PAD, PAD:-PAD]


def _pack_red_cells(rng: np.random.Generator, sprites: list[tuple[np.ndarray, float]],
                    count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to ``count`` red cells at random spots, barely overlapping as on a good smear."""
    # Centres may lie slightly outside the frame; PAD leaves room for the largest sprite.
    centres = rng.integers(PAD - 6, PAD + SIZE + 6, (3 * count, 2))
    kinds = rng.integers(len(sprites), size=3 * count)
    radii = np.array([sprites[k][1] for k in kinds])
    offsets = centres[:, None] - centres[None]
    gaps = np.hypot(offsets[..., 0], offsets[..., 1]) - 0.85 * (radii[:, None] + radii[None])
    overlaps = gaps <= 0
    kept = np.zeros(len(centres), bool)
    for i in range(len(centres)):  # greedy: keep a candidate if it clears all kept ones
        kept[i] = not overlaps[i, kept].any()
        if kept.sum() == count:
            break
    return [(sprites[kinds[i]][0], centres[i]) for i in np.flatnonzero(kept)]


def _red_cell_sprite(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Optical density of one red cell (a slightly oval disc with a paler centre), its radius."""
    radius = rng.uniform(16, 21)
    half = int(radius * 1.15) + 2
    y, x = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    angle, stretch = rng.uniform(0, np.pi), rng.uniform(1.0, 1.12)
    u = np.hypot((x * np.cos(angle) + y * np.sin(angle)) / stretch,
                 -x * np.sin(angle) + y * np.cos(angle)) / radius
    edge = np.clip((1 - u) * radius + 0.5, 0, 1)  # ~1 px soft outline
    rim = np.clip((u - 0.35) / 0.35, 0, 1)  # the central pallor fades into the rim
    density = edge * (RBC_PALLOR_OD + rim * (RBC_RIM_OD - RBC_PALLOR_OD))
    return (rng.uniform(0.85, 1.15) * density).astype(np.float32), radius * stretch


def _platelet_sprite(rng: np.random.Generator) -> np.ndarray:
    """A small purple speck, as platelets look on real smears."""
    y, x = np.mgrid[-4:5, -4:5].astype(np.float32)
    return np.clip(rng.uniform(1.5, 3.0) - np.hypot(x, y) + 0.5, 0, 1) * PLATELET_OD


def _draw_lymphocyte(rng: np.random.Generator, look: _Look, under: np.ndarray) -> np.ndarray:
    """Paint a lymphocyte (cytoplasm, then nucleus) over the central window ``under``."""
    nucleus_radius = rng.uniform(*look.nucleus_radius)
    cell_radius = nucleus_radius * rng.uniform(*look.cytoplasm_ratio)
    cell_centre = WINDOW / 2 + rng.normal(0, 3, 2)
    # The nucleus sits off-centre, visibly so only within abundant cytoplasm.
    shift = rng.uniform(0, 0.5) * (cell_radius - nucleus_radius)
    cell, cytoplasm = _cytoplasm(rng, look, cell_centre, cell_radius)
    nucleus, chromatin = _nucleus(rng, look, cell_centre + shift * _unit_vector(rng),
                                  nucleus_radius)
    painted = under + np.maximum(cell, nucleus) * (cytoplasm - under)
    return painted + nucleus * (chromatin - painted)


def _cytoplasm(rng: np.random.Generator, look: _Look, centre: np.ndarray,
               radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Mask and colour of the cell body, darker towards its membrane."""
    distance, angle = _polar(centre)
    mask = _soft_mask(distance, _outline(rng, angle, radius, 0.02, 0.0))
    rim = np.clip(distance / radius, 0, 1) ** 3
    inner, outer = _colour(*look.cytoplasm_inner), _colour(*look.cytoplasm_rim)
    return mask, inner + rim * (outer - inner)


def _nucleus(rng: np.random.Generator, look: _Look, centre: np.ndarray,
             radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Mask and colour of the nucleus: textured chromatin inside a possibly irregular outline."""
    distance, angle = _polar(centre)
    outline = _outline(rng, angle, radius, look.wobble, look.cleft_chance)
    texture = (look.chromatin_contrast * _smooth_noise(rng, look.chromatin_grain, WINDOW)
               + 0.15 * _smooth_noise(rng, 48, WINDOW))  # fine speckle seen in every nucleus
    # Chromatin condenses under the nuclear membrane: darken a ~3 px band along the outline.
    chromatin = np.maximum(np.clip(0.5 + texture, 0, 1),
                           np.clip(1 - (outline - distance) / 3, 0, 1))
    return _soft_mask(distance, outline), NUCLEUS_LIGHT + chromatin * (NUCLEUS_DARK - NUCLEUS_LIGHT)


def _outline(rng: np.random.Generator, angle: np.ndarray, radius: float, wobble: float,
             cleft_chance: float) -> np.ndarray:
    """Radius as a function of angle: low-order harmonics, optionally one cleft (notch)."""
    shape = np.ones_like(angle)
    for k in range(2, 6):
        amplitude, phase = 2 * wobble * rng.normal() / k, rng.uniform(0, 2 * np.pi)
        shape += np.float32(amplitude) * np.cos(k * angle + np.float32(phase))
    if rng.random() < cleft_chance:
        offset = (angle - np.float32(rng.uniform(-np.pi, np.pi)) + np.pi) % (2 * np.pi) - np.pi
        shape -= np.float32(rng.uniform(0.2, 0.4)) * np.exp(-(offset / np.float32(0.14)) ** 2)
    return np.float32(radius) * shape


def _polar(centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dy, dx = _WY - np.float32(centre[0]), _WX - np.float32(centre[1])
    return np.hypot(dx, dy), np.arctan2(dy, dx)


def _soft_mask(distance: np.ndarray, radius: np.ndarray) -> np.ndarray:
    return np.clip(radius - distance + 0.5, 0, 1)  # anti-aliased over ~1 px


def _unit_vector(rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    return np.array([np.sin(angle), np.cos(angle)])


def _smooth_noise(rng: np.random.Generator, grid: int, size: int) -> np.ndarray:
    """A smooth random field of roughly unit amplitude; a smaller ``grid`` gives coarser blobs."""
    coarse = Image.fromarray(rng.standard_normal((grid, grid)).astype(np.float32))
    return np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC))
