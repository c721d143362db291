"""Face alignment: similarity transform from 5 landmarks onto a fixed canonical template.

The template (``TEMPLATE_5PT``) gives the landmark positions in a unit square
in dlib's 5-point order; for an output of ``size`` pixels the target points
are ``TEMPLATE_5PT * size``. Eyes lie on the line y = 0.40, the outer eye
corners are 0.36 of the width apart and the nose base sits at (0.50, 0.59),
which leaves room for the hair and chin of an ID photo. ``margin`` shrinks the
face around the template centre: ``margin = 0.2`` makes it 1/1.2 as large.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: dlib 5-point order: right eye (image right) outer, inner; left eye outer, inner; nose base.
TEMPLATE_5PT = np.array([[0.680, 0.400], [0.578, 0.400], [0.320, 0.400], [0.422, 0.400], [0.500, 0.590]])
TEMPLATE_CENTER = np.array([0.5, 0.5])


def template_points(size: int, margin: float = 0.0) -> np.ndarray:
    """Target landmark positions (5, 2) in pixels for a ``size`` x ``size`` output."""
    pts = TEMPLATE_CENTER + (TEMPLATE_5PT - TEMPLATE_CENTER) / (1.0 + margin)
    return pts * size


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation mapping ``src`` onto ``dst`` (Umeyama), as 2x3."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # no reflections
        sign[1, 1] = -1
    rot = u @ sign @ vt
    scale = np.trace(np.diag(sig) @ sign) / s.var(0).sum()
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def apply_transform(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Map (N, 2) points with a 2x3 affine matrix."""
    return np.asarray(pts) @ m[:, :2].T + m[:, 2]


def align_face(img: Image.Image, landmarks: np.ndarray, size: int, margin: float = 0.0) -> Image.Image:
    """Warp ``img`` so ``landmarks`` land on the template; antialiased when shrinking.

    When the face must shrink, the photo is first reduced with a Lanczos
    filter to the right scale (that is the antialiasing), so the final warp
    only rotates and shifts, with bicubic interpolation.
    """
    dst = template_points(size, margin)
    m = similarity_transform(landmarks, dst)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 1.0:
        # Reduce only the region the output will sample from, plus a safety border.
        inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
        corners = apply_transform(inv, np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64))
        border = 4.0 / scale
        left, top = np.floor(corners.min(0) - border)
        right, bottom = np.ceil(corners.max(0) + border)
        region = img.crop((int(left), int(top), int(right), int(bottom)))  # pads outside with black
        new_size = (max(1, round(region.width * scale)), max(1, round(region.height * scale)))
        img = region.resize(new_size, Image.Resampling.LANCZOS)
        sx, sy = new_size[0] / region.width, new_size[1] / region.height
        landmarks = (np.asarray(landmarks) - [left, top]) * [sx, sy]
        m = similarity_transform(landmarks, dst)
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    return img.transform((size, size), Image.Transform.AFFINE, tuple(inv.ravel()), resample=Image.Resampling.BICUBIC)
