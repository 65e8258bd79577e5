"""Execution providers: where the vision graph and the decoder run.

`cpu` runs both on onnxruntime's CPU provider. `cuda` runs the vision graph on
onnxruntime's CUDA provider and the decoder on onnxruntime-genai's CUDA path.
`tensorrt` runs the vision graph on onnxruntime's TensorRT provider (engines
cached on disk, CUDA then CPU for anything TensorRT rejects) and the decoder on
genai's CUDA path: genai drives its decoder with its own KV-cache buffers
(`past_present_share_buffer`: past and present key/values bound to one device
buffer), which the TensorRT provider does not take.

A provider this install lacks is one clear line, not a silent fall-back to CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zipvlm.runtime.errors import ArgumentError

PROVIDERS = ("cpu", "cuda", "tensorrt")
ORT_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider"}
INSTALL_HINT = {
    "cuda": "install onnxruntime-gpu (on Jetson: the jetson-containers onnxruntime image)",
    "tensorrt": "install onnxruntime-gpu built with TensorRT, and TensorRT itself",
}


# onnxruntime's common-subexpression elimination merges the q/k/v projections' identical
# QuantizeLinear nodes of an INT8 Q/DQ graph back into one, which keeps those MatMuls out of
# the fused int8 kernels: on CLIP-L, 94 of 163 fuse with it and all 163 without, and INT8's
# speed-up over float32 goes from 1.6-1.85x to 2.6-3.8x on a VNNI CPU.
INT8_DISABLED_OPTIMIZERS = ("CommonSubexpressionElimination",)


def tensorrt_cache_dir() -> Path:
    """Where the TensorRT provider keeps built engines ($ZIPVLM_CACHE, else ~/.cache/zipvlm)."""
    root = os.environ.get("ZIPVLM_CACHE") or Path.home() / ".cache" / "zipvlm"
    return Path(root) / "tensorrt"


def ort_providers(provider: str) -> list:
    """onnxruntime's provider list for the vision graph, checked against this install."""
    import onnxruntime as ort

    if provider not in PROVIDERS:
        raise ArgumentError(f"--provider {provider} is not one of {', '.join(PROVIDERS)}")
    available = ort.get_available_providers()
    if ORT_NAMES[provider] not in available:
        names = ", ".join(name.removesuffix("ExecutionProvider") for name in available)
        raise ArgumentError(f"--provider {provider}: this onnxruntime has no {ORT_NAMES[provider]} "
                            f"(it has {names}); {INSTALL_HINT[provider]}")
    if provider == "cpu":
        return ["CPUExecutionProvider"]
    chain: list = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if provider == "tensorrt":
        cache = tensorrt_cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        chain.insert(0, ("TensorrtExecutionProvider", {
            "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache)}))
    return chain


def check_provider(og, provider: str) -> None:
    """Fail before any loading when onnxruntime or onnxruntime-genai lacks `provider`."""
    ort_providers(provider)
    if provider != "cpu" and not og.is_cuda_available():
        raise ArgumentError(f"--provider {provider}: this onnxruntime-genai has no CUDA support; "
                            "pip install onnxruntime-genai-cuda (on Jetson build it from source)")


def genai_model(og, bundle: Path, provider: str):
    """The bundle's decoder pipeline as an og.Model on `provider`'s genai device."""
    config = og.Config(str(bundle))
    config.clear_providers()
    if provider != "cpu":
        config.append_provider("cuda")
    return og.Model(config)


@dataclass
class VisionRunner:
    """The vision graph with its input and output bound once per shape (IO binding).

    Shapes are static, so every frame reuses the same device buffers: the input is
    copied in place and the output read back, with no allocation per frame.
    """

    session: object  # onnxruntime.InferenceSession
    device: str = "cpu"  # "cpu" or "cuda": where the bound buffers live
    keep_indices: np.ndarray | None = None  # (B, D) token indices the last call kept, ascending
    _bound: dict = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path, provider: str, threads: int,
             disabled_optimizers: tuple[str, ...] = ()) -> VisionRunner:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=ort_providers(provider),
                                       disabled_optimizers=list(disabled_optimizers))
        return cls(session, "cpu" if provider == "cpu" else "cuda")

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """pixel_values (B, 3, H, W) float32 -> image_embeds (B, K, hidden) float32."""
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        binding, pixels_value = self._binding(pixels.shape)
        pixels_value.update_inplace(pixels)
        self.session.run_with_iobinding(binding)
        # Copies: the bound buffers are overwritten by the next frame.
        embeds, self.keep_indices = binding.copy_outputs_to_cpu()
        return embeds

    def _binding(self, shape: tuple[int, ...]):
        if shape not in self._bound:
            import onnxruntime as ort

            outputs = {o.name: o for o in self.session.get_outputs()}
            pixels_value = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, self.device, 0)
            binding = self.session.io_binding()
            binding.bind_ortvalue_input("pixel_values", pixels_value)
            for name, dtype in (("image_embeds", np.float32), ("keep_indices", np.int64)):
                value = ort.OrtValue.ortvalue_from_shape_and_type(
                    [shape[0], *outputs[name].shape[1:]], dtype, self.device, 0)
                binding.bind_ortvalue_output(name, value)
            self._bound[shape] = (binding, pixels_value)
        return self._bound[shape]
