"""Face detection and 5-point landmarks with dlib.

The detector and landmark models come from the ``face-recognition-models``
package. Its ``__init__`` imports ``pkg_resources`` (gone from recent
setuptools), so the model files are located through the import system
without executing that module.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..plumbing.errors import DsganError

#: Photos are searched for faces on a copy whose longest side is at most this.
DETECT_MAX_SIDE = 1024
#: Border added around the detection copy so faces touching the frame are found.
DETECT_PAD_FRACTION = 0.2

LANDMARK_MODEL = "shape_predictor_5_face_landmarks.dat"
CNN_MODEL = "mmod_human_face_detector.dat"


@dataclass
class Face:
    """One detected face in full-resolution image coordinates."""

    box: tuple[float, float, float, float]  # left, top, right, bottom
    score: float
    landmarks: np.ndarray  # (5, 2) x, y in dlib's 5-point order

    @property
    def width(self) -> float:
        """Box width in pixels."""
        return self.box[2] - self.box[0]

    @property
    def rank(self) -> float:
        """Selection rule when a photo holds several faces: box area x detector score."""
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1]) * max(self.score, 1e-6)


def model_path(name: str) -> Path:
    """Path of a model file shipped by the face-recognition-models package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DsganError("face-recognition-models is not installed: pip install face-recognition-models")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise DsganError(f"{path}: model file missing from face-recognition-models; reinstall it")
    return path


class FaceDetector:
    """dlib HOG (default) or MMOD-CNN face detector plus the 5-point landmark model."""

    def __init__(self, kind: str = "hog"):
        try:
            import dlib
        except ImportError:
            raise DsganError("dlib is not installed: pip install dlib-bin") from None
        if kind not in ("hog", "cnn"):
            raise DsganError(f"unknown detector {kind!r}; use 'hog' or 'cnn'")
        self.kind = kind
        self._dlib = dlib
        self._hog = dlib.get_frontal_face_detector() if kind == "hog" else None
        self._cnn = dlib.cnn_face_detection_model_v1(str(model_path(CNN_MODEL))) if kind == "cnn" else None
        self._predictor = dlib.shape_predictor(str(model_path(LANDMARK_MODEL)))

    def _raw_detect(self, arr: np.ndarray, upsample: int) -> list[tuple[object, float]]:
        """dlib rectangles with scores on a uint8 RGB array."""
        if self._hog is not None:
            rects, scores, _ = self._hog.run(arr, upsample, 0.0)
            return list(zip(rects, scores))
        return [(d.rect, float(d.confidence)) for d in self._cnn(arr, upsample)]

    def detect(self, img: Image.Image) -> list[Face]:
        """All faces in an RGB image, landmarks mapped back to full resolution."""
        factor = min(1.0, DETECT_MAX_SIDE / max(img.size))
        small = (
            img
            if factor == 1.0
            else img.resize((max(1, round(img.width * factor)), max(1, round(img.height * factor))), Image.Resampling.LANCZOS)
        )
        pad = round(DETECT_PAD_FRACTION * max(small.size))
        arr = np.asarray(small, dtype=np.uint8)
        arr = np.pad(arr, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        # Upsampling finds faces down to ~40 px; only affordable on small photos.
        upsample = 1 if max(small.size) <= 640 else 0
        faces = []
        for rect, score in self._raw_detect(arr, upsample):
            shape = self._predictor(arr, rect)
            pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
            box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float64)
            scale = 1.0 / factor
            faces.append(Face(box=tuple(((box - pad) * scale).tolist()), score=float(score), landmarks=(pts - pad) * scale))
        return sorted(faces, key=lambda f: f.rank, reverse=True)
