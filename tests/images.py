"""Photo-like test images drawn with OpenCV: smooth shading, shapes, text, JPEG artefacts."""

from __future__ import annotations

import cv2
import numpy as np


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A BGR uint8 image, as OpenCV decodes a camera frame or a JPEG file."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack(
        [127 + 100 * np.sin(xx / (17 + 3 * seed + 5 * c)) * np.cos(yy / (23 + 7 * c)) for c in range(3)],
        axis=-1,
    ).astype(np.uint8)
    for _ in range(12):
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        radius = int(rng.integers(5, max(6, min(height, width) // 4)))
        cv2.circle(image, center, radius, tuple(int(v) for v in rng.integers(0, 256, 3)), -1)
    cv2.putText(
        image,
        "zipvlm 42",
        (width // 8, height // 2),
        cv2.FONT_HERSHEY_SIMPLEX,
        max(height, width) / 400,
        (255, 255, 255),
        2,
    )
    image = cv2.GaussianBlur(image, (3, 3), 0)
    _, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
