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
from pathlib import Path

from zipvlm.bundle.errors import ArgumentError

PROVIDERS = ("cpu", "cuda", "tensorrt")
ORT_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
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
        raise ArgumentError(
            f"--provider {provider}: this onnxruntime has no {ORT_NAMES[provider]} "
            f"(it has {names}); {INSTALL_HINT[provider]}"
        )
    if provider == "cpu":
        return ["CPUExecutionProvider"]
    chain: list = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if provider == "tensorrt":
        cache = tensorrt_cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        chain.insert(
            0,
            (
                "TensorrtExecutionProvider",
                {
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(cache),
                    "trt_timing_cache_enable": True,
                    "trt_timing_cache_path": str(cache),
                },
            ),
        )
    return chain


def check_provider(og, provider: str) -> None:
    """Fail before any loading when onnxruntime or onnxruntime-genai lacks `provider`."""
    ort_providers(provider)
    if provider != "cpu" and not og.is_cuda_available():
        raise ArgumentError(
            f"--provider {provider}: this onnxruntime-genai has no CUDA support; "
            "pip install onnxruntime-genai-cuda (on Jetson build it from source)"
        )


def genai_model(og, bundle: Path, provider: str):
    """The bundle's decoder pipeline as an og.Model on `provider`'s genai device."""
    config = og.Config(str(bundle))
    config.clear_providers()
    if provider != "cpu":
        config.append_provider("cuda")
    return og.Model(config)


def ort_session(
    path: Path,
    provider: str = "cpu",
    threads: int = 0,
    disabled_optimizers: tuple[str, ...] = (),
    optimize: bool = True,
):
    """The one place an onnxruntime session is made: `threads` intra-op threads (0: all cores),
    `provider`'s chain, optional graph optimizations switched off (whole or by name)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(
        str(path), options, providers=ort_providers(provider), disabled_optimizers=list(disabled_optimizers)
    )
