"""The morphology encoder: named nucleus and cell features a haematologist can read.

Per cell image (the lymphocyte is in the centre of each crop):

1. decode at half resolution (libjpeg's DCT scaling: a 224 px JPEG decodes straight to
   112 px, several times cheaper than a full decode) and keep the central 80 px (= 160 px of
   the original), which holds the lymphocyte and some background;
2. **nucleus**: Otsu threshold of 255 - R (the nucleus is the darkest, least red object;
   lightly smoothed, and Otsu applied again among the stained pixels so that red cells fall
   outside), the connected component nearest the centre kept, holes filled;
3. **cell**: pixels with B - R > 0 (bluish cytoplasm; red cells and the background are
   reddish) within ``NEAR`` px of the nucleus, joined to it, holes filled; the
   **cytoplasm** is the cell minus the nucleus, the **ring** the ``RING`` px just outside the
   nucleus (the perinuclear zone), the **background** everything beyond the cell;
4. features (``FEATURE_NAMES``, 79): shape of nucleus and cell, N:C ratio; colour (R, G, B
   mean and spread) and haematoxylin optical density of nucleus, cytoplasm, ring and
   background; nucleus stain quantiles; grey-level co-occurrence texture (8 levels, distances
   1 and 2, four angles averaged) and uniform LBP (P=8, R=1) histograms of the nucleus; plus
   ``segmentation_failed``: 1 when no plausible nucleus was found (blank or foreign image),
   every other feature then 0. A failed cell is kept and flagged, never dropped.

Lengths are in pixels of the 224 px original, areas in its square pixels. What was given
up for speed: full-resolution shape detail (the half-resolution grid rounds outlines), and
a single global Otsu threshold per image rather than an adaptive one.
"""

from __future__ import annotations

from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from skimage.feature import graycomatrix, graycoprops, local_binary_pattern

from lympho.data import read_image
from lympho.encoders import source_version

#: A digest of this file: any change of what it computes changes the cache key (the
#: parameters below and the libraries' versions are in ``params()`` besides).
VERSION = source_version(__file__)
SCALE = 2  # working grid: half resolution of the 224 px original
WORK = 112  # the original's 224 px at half resolution
CROP = 80  # central crop of the working grid
NEAR = 10  # cytoplasm is searched within this many working px of the nucleus
RING = 2  # perinuclear ring width, working px
SMOOTH = 1.5  # Gaussian sigma, working px, before the nucleus threshold
MIN_NUCLEUS = 30  # working px: a smaller "nucleus" is a failed segmentation
LEVELS = 8  # GLCM grey levels
# Haematoxylin column of the RGB -> HED colour-deconvolution matrix (Ruifrok and Johnston),
# as in skimage.color.hed_from_rgb; copied to avoid importing skimage.color.
HEMATOXYLIN = np.array([1.87798274, -0.06590806, -0.60190736], dtype=np.float32)

_SHAPE = ["area", "perimeter", "equivalent_diameter", "major_axis", "minor_axis", "eccentricity",
          "solidity", "extent", "circularity"]
_COLOUR = ["r_mean", "g_mean", "b_mean", "r_std", "g_std", "b_std", "hema_mean", "hema_std"]
_GLCM = ["contrast", "dissimilarity", "homogeneity", "energy", "correlation", "entropy"]
FEATURE_NAMES = (
    [f"nucleus_{name}" for name in _SHAPE] + ["nucleus_centre_offset"]
    + [f"cell_{name}" for name in ("area", "perimeter", "equivalent_diameter", "eccentricity", "solidity",
                                   "circularity")]
    + ["nc_ratio", "nucleus_cell_offset", "n_dark_components"]
    + [f"{region}_{name}" for region in ("nucleus", "cytoplasm", "ring", "background") for name in _COLOUR]
    + ["nucleus_hema_p10", "nucleus_hema_p50", "nucleus_hema_p90", "ring_minus_cytoplasm_hema",
       "nucleus_minus_background_hema", "cytoplasm_b_minus_r"]
    + [f"glcm{d}_{name}" for d in (1, 2) for name in _GLCM]
    + [f"lbp_{i}" for i in range(10)]
    + ["segmentation_failed"]
)
N_FEATURES = len(FEATURE_NAMES)


def half_resolution(path: Path | str) -> np.ndarray:
    """The image as 112 x 112 uint8 RGB: a 224 px JPEG is decoded straight at half scale."""
    image = read_image(path, draft=WORK)  # the package's one decoder; DCT-domain downscale for JPEG
    if image.size != (WORK, WORK):
        image = image.resize((WORK, WORK), resample=Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(image)


def centre(image: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` pixels of an image."""
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return image[top:top + size, left:left + size]


def decode(path: Path | str) -> np.ndarray:
    """The central ``CROP`` px of the image at half resolution, uint8 RGB."""
    return centre(half_resolution(path), CROP)


def _otsu(values: np.ndarray) -> float | None:
    """Otsu's threshold of uint8-range values (256-bin histogram); None when they are constant."""
    counts = np.bincount(values.astype(np.int64).ravel(), minlength=256).astype(np.float64)
    if np.count_nonzero(counts) < 2:
        return None
    levels = np.arange(256)
    weight1 = np.cumsum(counts)
    weight2 = weight1[-1] - weight1
    mean1 = np.cumsum(counts * levels) / np.maximum(weight1, 1)
    mean2 = (np.sum(counts * levels) - np.cumsum(counts * levels)) / np.maximum(weight2, 1)
    variance = weight1 * weight2 * (mean1 - mean2) ** 2
    return float(np.argmax(variance[:-1]))


def _nucleus_threshold(darkness: np.ndarray) -> float | None:
    """Otsu's threshold applied twice: the first separates the pale background from
    everything stained, the second, among the stained pixels, the nucleus from red cells and
    cytoplasm (which a single threshold lumps together when red cells crowd the crop)."""
    background = _otsu(darkness)
    if background is None:
        return None
    stained = darkness[darkness > background]
    nucleus = _otsu(stained) if stained.size else None
    return background if nucleus is None else nucleus


def _central_component(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The connected component nearest the image centre (holes filled), and how many there were."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask, 0
    centre = (np.array(mask.shape) - 1) / 2
    rows, cols = np.nonzero(labels)
    distance = np.hypot(rows - centre[0], cols - centre[1])
    nearest = np.full(count + 1, np.inf)
    np.minimum.at(nearest, labels[rows, cols], distance)
    return ndimage.binary_fill_holes(labels == int(np.argmin(nearest))), count


def segment(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Nucleus and cell masks of a decoded crop, or None when segmentation fails."""
    found = _segment(rgb)
    return found[:2] if found else None


def _segment(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """:func:`segment`, plus each pixel's distance to the nucleus (which :func:`features`
    needs too, so it is computed once)."""
    red = rgb[..., 0].astype(np.int16)
    # Smoothed, so that coarse chromatin clumps do not split the nucleus.
    darkness = ndimage.gaussian_filter((255 - red).astype(np.float32), SMOOTH).round()
    threshold = _nucleus_threshold(darkness)
    if threshold is None:
        return None
    nucleus, _ = _central_component(darkness > threshold)
    if nucleus.sum() < MIN_NUCLEUS or nucleus.mean() > 0.6:
        return None
    outside = ndimage.distance_transform_edt(~nucleus)
    bluish = rgb[..., 2].astype(np.int16) - red > 0
    cell, _ = _central_component((bluish & (outside <= NEAR)) | nucleus)
    return nucleus, cell | nucleus, outside


def masks(path: Path | str) -> dict:
    """What the Data page overlays on one cell: the decoded crop (``image``, uint8 RGB, the
    central 160 px of the original at half resolution), boolean ``nucleus`` and ``cell``
    masks of the same size (all False when segmentation failed), their outlines (one-pixel
    boundaries), and ``failed``."""
    rgb = decode(path)
    found = segment(rgb)
    nucleus, cell = found if found else (np.zeros(rgb.shape[:2], bool), np.zeros(rgb.shape[:2], bool))
    outline = lambda mask: mask & ~ndimage.binary_erosion(mask)  # noqa: E731
    return {"image": rgb, "nucleus": nucleus, "cell": cell, "nucleus_outline": outline(nucleus),
            "cell_outline": outline(cell), "failed": found is None}


def _perimeter(mask: np.ndarray) -> float:
    """Boundary length, approximated: the number of edge pixels times 0.95 (one factor
    standing in for skimage's per-configuration weights); never 0."""
    edge = mask & ~ndimage.binary_erosion(mask)
    return float(edge.sum()) * 0.95 + 1e-9


def _shape(mask: np.ndarray) -> list[float]:
    """area, perimeter, equivalent diameter, major and minor axis, eccentricity, solidity,
    extent, circularity (original-pixel units) of a non-empty mask."""
    rows, cols = np.nonzero(mask)
    area = float(len(rows))
    covariance = np.cov(np.vstack([rows, cols])) if area > 1 else np.zeros((2, 2))
    eigen = np.sort(np.clip(np.linalg.eigvalsh(covariance), 0, None))[::-1]
    major, minor = 4 * np.sqrt(eigen)
    eccentricity = float(np.sqrt(1 - eigen[1] / eigen[0])) if eigen[0] > 0 else 0.0
    perimeter = _perimeter(mask)
    hull = _hull_area(mask)
    extent = area / ((np.ptp(rows) + 1) * (np.ptp(cols) + 1))
    return [area * SCALE**2, perimeter * SCALE, np.sqrt(4 * area / np.pi) * SCALE, major * SCALE, minor * SCALE,
            eccentricity, min(1.0, area / hull), extent, min(1.0, 4 * np.pi * area / perimeter**2)]


def _hull_area(mask: np.ndarray) -> float:
    """Area of the convex hull of the mask's boundary pixel squares."""
    rows, cols = np.nonzero(mask & ~ndimage.binary_erosion(mask))
    corners = np.concatenate([np.column_stack([rows + dr, cols + dc]) for dr in (0, 1) for dc in (0, 1)])
    try:
        return float(ConvexHull(corners).volume)  # in 2-D, qhull's "volume" is the area
    except QhullError:  # a degenerate (one-pixel-thin) region
        return float(mask.sum())


def _colour(rgb: np.ndarray, hema: np.ndarray, mask: np.ndarray) -> list[float]:
    if not mask.any():
        return [0.0] * len(_COLOUR)
    pixels = rgb[mask].astype(np.float32)
    values = hema[mask]
    return [*pixels.mean(0), *pixels.std(0), float(values.mean()), float(values.std())]


def _glcm(levels: np.ndarray, mask: np.ndarray) -> list[float]:
    """Co-occurrence texture of the masked region (``_GLCM`` at distances 1 and 2, four
    angles averaged, symmetric). Pixels outside the mask get an extra grey level 0 whose
    pairs are dropped, so the background never enters the nucleus texture."""
    q = np.where(mask, levels + 1, 0).astype(np.uint8)
    counts = graycomatrix(q, [1, 2], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], levels=LEVELS + 1,
                          symmetric=True)[1:, 1:].astype(np.float64)
    totals = counts.sum(axis=(0, 1), keepdims=True)
    p = counts / np.maximum(totals, 1)
    props = {name: graycoprops(p, name).mean(axis=1)
             for name in ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")}
    entropy = -(p * np.log2(np.where(p > 0, p, 1))).sum(axis=(0, 1)).mean(axis=1)
    return [float(v) for d in range(2) for v in (*(props[n][d] for n in _GLCM[:-1]), entropy[d])]


def _uniform_lbp(grey: np.ndarray, mask: np.ndarray) -> list[float]:
    """Histogram (10 bins) of rotation-invariant uniform LBP codes (P=8, R=1) over the mask."""
    rows, cols = np.nonzero(mask)
    box = (slice(max(rows.min() - 1, 0), rows.max() + 2), slice(max(cols.min() - 1, 0), cols.max() + 2))
    codes = local_binary_pattern(grey[box], 8, 1, "uniform").astype(np.int64)[mask[box]]
    return list(np.bincount(codes, minlength=10)[:10] / codes.size)


def features(rgb: np.ndarray) -> np.ndarray:
    """``FEATURE_NAMES`` of one decoded crop (float32); failed segmentation: zeros and the flag."""
    out = np.zeros(N_FEATURES, dtype=np.float32)
    found = _segment(rgb)
    if found is None:
        out[-1] = 1.0
        return out
    nucleus, cell, outside = found
    cytoplasm = cell & ~nucleus
    ring = (outside > 0) & (outside <= RING)
    background = ~cell & (ndimage.distance_transform_edt(~cell) > RING)
    od = -np.log((rgb.astype(np.float32) + 1) / 256)
    hema = od @ HEMATOXYLIN
    nucleus_shape = _shape(nucleus)
    cell_shape = _shape(cell)
    centre = (np.array(nucleus.shape) - 1) / 2
    n_centroid, c_centroid = (np.array(ndimage.center_of_mass(m)) for m in (nucleus, cell))
    darkness = 255 - rgb[..., 0].astype(np.int16)
    _, n_dark = ndimage.label(darkness > _otsu(darkness))
    colours = [_colour(rgb, hema, region) for region in (nucleus, cytoplasm, ring, background)]
    nucleus_hema = hema[nucleus]
    grey = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    lo, hi = np.percentile(grey[nucleus], [1, 99])
    levels = np.clip(((grey - lo) / max(hi - lo, 1e-6) * LEVELS).astype(np.int64), 0, LEVELS - 1)
    cytoplasm_b_minus_r = (float((rgb[..., 2][cytoplasm].astype(np.float32) - rgb[..., 0][cytoplasm]).mean())
                           if cytoplasm.any() else 0.0)
    values = (
        nucleus_shape + [float(np.hypot(*(n_centroid - centre))) * SCALE]
        + [cell_shape[i] for i in (0, 1, 2, 5, 6, 8)]
        + [nucleus_shape[0] / cell_shape[0], float(np.hypot(*(n_centroid - c_centroid))) * SCALE, float(n_dark)]
        + [v for colour in colours for v in colour]
        + [*np.percentile(nucleus_hema, [10, 50, 90]), colours[2][6] - colours[1][6], colours[0][6] - colours[3][6],
           cytoplasm_b_minus_r]
        + _glcm(levels, nucleus)
        + _uniform_lbp(grey.astype(np.uint8), nucleus)
    )
    out[:-1] = values
    return out


class MorphologyEncoder:
    """The morphology features behind the :class:`lympho.encoders.Encoder` protocol.

    Per-image CPU work (``batched = False``): the feature extractor runs ``load`` and
    ``encode`` whole in worker processes, one per core. No torch, no GPU.
    """

    name = "morphology"
    version = VERSION
    batched = False
    feature_names = FEATURE_NAMES

    def params(self) -> dict:
        return {"kind": "morphology", "device": "cpu", "precision": "fp32", "work_px": WORK, "crop_px": CROP,
                "near": NEAR, "ring": RING, "levels": LEVELS, "numpy": np.__version__,
                "scipy": package_version("scipy"), "scikit-image": package_version("scikit-image"),
                "pillow": package_version("pillow")}

    def load(self, path) -> np.ndarray:
        return decode(path)

    def encode(self, images) -> np.ndarray:
        return np.stack([features(np.asarray(image)) for image in images]) if len(images) else \
            np.zeros((0, N_FEATURES), np.float32)
