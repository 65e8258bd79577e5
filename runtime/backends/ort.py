"""The `ort` vision backend: the graph in onnxruntime with its buffers bound once per shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zipvlm.runtime.backends import VisionOutput
from zipvlm.runtime.providers import ort_session


@dataclass
class OrtVisionRunner:
    """The vision graph with its input and outputs bound once per shape (IO binding).

    Shapes are static, so every frame reuses the same device buffers: the input is
    copied in place and the outputs read back, with no allocation per frame.
    """

    session: Any  # onnxruntime.InferenceSession
    device: str = "cpu"  # "cpu" or "cuda": where the bound buffers live
    _bound: dict = field(default_factory=dict)

    @classmethod
    def open(
        cls, path: Path, provider: str, threads: int, disabled_optimizers: tuple[str, ...] = ()
    ) -> OrtVisionRunner:
        session = ort_session(path, provider, threads, disabled_optimizers)
        return cls(session, "cpu" if provider == "cpu" else "cuda")

    def __call__(self, pixels: np.ndarray) -> VisionOutput:
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        binding, pixels_value = self._binding(pixels.shape)
        pixels_value.update_inplace(pixels)
        self.session.run_with_iobinding(binding)
        # Copies: the bound buffers are overwritten by the next frame.
        embeds, keep = binding.copy_outputs_to_cpu()
        return VisionOutput(embeds, keep)

    def _binding(self, shape: tuple[int, ...]):
        if shape not in self._bound:
            import onnxruntime as ort

            outputs = {o.name: o for o in self.session.get_outputs()}
            pixels_value = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, self.device, 0)
            binding = self.session.io_binding()
            binding.bind_ortvalue_input("pixel_values", pixels_value)
            for name, dtype in (("image_embeds", np.float32), ("keep_indices", np.int64)):
                value = ort.OrtValue.ortvalue_from_shape_and_type(
                    [shape[0], *outputs[name].shape[1:]], dtype, self.device, 0
                )
                binding.bind_ortvalue_output(name, value)
            self._bound[shape] = (binding, pixels_value)
        return self._bound[shape]
