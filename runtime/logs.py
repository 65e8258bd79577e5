"""onnxruntime's quantization tools log through the root logger; this keeps them quiet."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_root_logger() -> Iterator[None]:
    """Root-logger messages below ERROR dropped (quantize_static and quantize_dynamic give advice
    there, and would install a handler on it), for the duration of the block."""
    root = logging.getLogger()
    level, guard = root.level, logging.NullHandler()
    root.addHandler(guard)
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.removeHandler(guard)
        root.setLevel(level)
