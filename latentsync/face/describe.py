"""Who a face is: 128-d descriptors from dlib's face recognition ResNet, to tell people apart across a cut.

The model (`dlib_face_recognition_resnet_model_v1.dat`) ships in the `face-recognition-models` wheel beside the
5-point landmark model the dlib detector uses; Davis King released both into the public domain (the wheel's
licence file is CC0 1.0). dlib reads its own serialised format: no pickle is involved. The network was trained
so that one person's faces lie within 0.6 of each other (Euclidean distance), hence `SAME_PERSON_DISTANCE`.
"""
from __future__ import annotations

import numpy as np

from .dlib_models import DlibFaceDetector, _face_recognition_model

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
SAME_PERSON_DISTANCE = 0.6


class FaceDescriber:
    """A descriptor for the face in a box of a frame. The ResNet reads a 150 px chip aligned on dlib's five
    landmarks, so the landmarks come from the dlib detector's shape predictor (`landmarks`, made here when
    not given). Raises `FaceModelMissing` if the model file is not installed, ImportError without dlib; the
    models themselves load on the first `describe` (most clips have no cut and never need them)."""

    def __init__(self, landmarks: DlibFaceDetector | None = None) -> None:
        import dlib  # ImportError: the caller tracks without re-identification

        self._dlib = dlib
        self.path = _face_recognition_model(MODEL_FILE)
        self._landmarks = landmarks
        self._network = None

    def describe(self, frame: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """`[128]` float32 for the face in `box` of `frame` (`[H, W, 3]` uint8 RGB)."""
        if self._network is None:
            self._network = self._dlib.face_recognition_model_v1(str(self.path))
            if self._landmarks is None:
                self._landmarks = DlibFaceDetector()
        region, shape, _ = self._landmarks.landmark_shape(frame, box)
        return np.asarray(self._network.compute_face_descriptor(region, shape), np.float32)


def descriptor_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance of two descriptors: below `SAME_PERSON_DISTANCE` means one person."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
