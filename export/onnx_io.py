"""Saving ONNX models: one file under protobuf's 2 GB limit, external data above it."""

from __future__ import annotations

from pathlib import Path

import onnx

PROTOBUF_LIMIT = 2 * 1024**3 - 1


def save_model(model: onnx.ModelProto, path: Path) -> Path:
    """Write `model` to `path`, moving weights to `<name>.data` when it would not fit."""
    path = Path(path)
    external = model.ByteSize() > PROTOBUF_LIMIT
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=external,
        all_tensors_to_one_file=True,
        location=path.name + ".data" if external else None,
    )
    return path
