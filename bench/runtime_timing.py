"""Time one bundle with the runtime alone (no torch), in its own process; print JSON.

The language benchmark runs this once per bundle in a fresh interpreter with the
runtime alone (nothing of the exporter is imported). For each vision
graph given (one per token count) it computes the image embeddings, then times
the runtime's own generator: prefill of the chat prompt with the K image tokens,
the first token, and decoding. With --time-vision it also times preprocessing
and the vision graph. A Qwen2.5-VL bundle is timed with its own vision graph on a
frame of its camera's size, its prompt at the 3D positions of the kept tokens.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial
from pathlib import Path

import numpy as np

from zipvlm.runtime.backends.ort import OrtVisionRunner
from zipvlm.runtime.generation import GenerationOptions
from zipvlm.runtime.mrope import RopePositions
from zipvlm.runtime.pipeline import BundlePipeline
from zipvlm.runtime.preprocess import pixel_values
from zipvlm.runtime.prompt import PromptBuilder

QUESTION = "What is in front of the robot, and is the path clear?"
FRAME_SHAPE = (480, 640, 3)  # a VGA camera frame


def camera_frame(shape: tuple[int, int, int] = FRAME_SHAPE) -> np.ndarray:
    """A smooth BGR frame with some texture; latency does not depend on its content."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    base = (rows[..., None] * [1, 2, 3] + cols[..., None] * [3, 1, 2]) % 256
    return (base + rng.integers(0, 32, shape)).clip(0, 255).astype(np.uint8)


def bundle_frame_shape(bundle) -> tuple[int, int, int]:
    """The frame a bundle is timed on: its camera's size where it fixed one (Qwen2.5-VL, any-res),
    else VGA."""
    qwen, anyres = bundle.qwen, bundle.anyres
    if qwen is not None:
        return qwen.camera_height, qwen.camera_width, 3
    if anyres is not None:
        width, height = anyres.camera
        return height, width, 3
    return FRAME_SHAPE


def median_ms(run, repeats: int) -> float:
    """Median wall time of `run` after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def time_generation(
    pipeline: BundlePipeline,
    embeds: np.ndarray,
    ids: list[int],
    new_tokens: int,
    repeats: int,
    positions: RopePositions | None = None,
) -> dict[str, float]:
    """Median prefill ms, first-token ms (prefill + first sample) and decode tokens/s."""
    context = len(ids) + new_tokens
    # min_length keeps genai from stopping at a random model's end-of-sequence token.
    options = GenerationOptions(max_new_tokens=new_tokens)
    samples: dict[str, list[float]] = {"prefill_ms": [], "first_token_ms": [], "decode_tokens_per_s": []}
    for round_ in range(repeats + 1):  # round 0 warms up
        clock = time.perf_counter
        start = clock()
        generator, _bound = pipeline.generator(
            embeds, options, context, min_length=context, positions=positions
        )
        generator.append_tokens(np.asarray(ids, dtype=np.int32))
        prefilled = clock()
        generator.generate_next_token()
        generator.get_next_tokens()
        first = clock()
        for _ in range(new_tokens - 1):
            generator.generate_next_token()
            generator.get_next_tokens()
        end = clock()
        if round_:
            samples["prefill_ms"].append((prefilled - start) * 1000)
            samples["first_token_ms"].append((first - start) * 1000)
            samples["decode_tokens_per_s"].append((new_tokens - 1) / (end - first))
        del generator
    return {name: statistics.median(values) for name, values in samples.items()}


def measure(
    bundle: Path, graphs: dict[int, Path], repeats: int, new_tokens: int, threads: int, time_vision: bool
) -> dict:
    start = time.perf_counter()
    pipeline = BundlePipeline.open(bundle, threads=threads)
    load_s = time.perf_counter() - start
    frame = camera_frame(bundle_frame_shape(pipeline.bundle))
    rows = []
    for tokens, graph in graphs.items():
        vision = OrtVisionRunner.open(graph, "cpu", threads)
        pixels = pixel_values(frame, pipeline.bundle)
        embeds, keep = vision(pixels)
        if embeds.shape[1] != tokens:
            raise SystemExit(f"{graph} gives {embeds.shape[1]} image tokens, expected {tokens}")
        if pipeline.bundle.qwen is not None and tokens != pipeline.num_image_tokens:
            raise SystemExit(f"{bundle} places its own {pipeline.num_image_tokens} image tokens only")
        prompts = PromptBuilder(pipeline.bundle, tokens)
        ids = prompts.encode(prompts.chat_text(QUESTION))
        positions = pipeline.positions(ids, keep)
        row = {"image_tokens": tokens, "prompt_tokens": len(ids)}
        if time_vision:
            row["preprocess_ms"] = median_ms(partial(pixel_values, frame, pipeline.bundle), repeats)
            row["vision_ms"] = median_ms(partial(vision, pixels), repeats)
        row.update(time_generation(pipeline, embeds, ids, new_tokens, repeats, positions))
        rows.append(row)
    return {"load_s": load_s, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zipvlm.bench.runtime_timing",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument(
        "--vision",
        action="append",
        required=True,
        metavar="K=PATH",
        help="a vision graph giving K image tokens (repeatable)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--time-vision", action="store_true")
    args = parser.parse_args(argv)
    graphs = {int(k): Path(path) for k, path in (item.split("=", 1) for item in args.vision)}
    print(
        json.dumps(
            measure(args.bundle, graphs, args.repeats, args.new_tokens, args.threads, args.time_vision)
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
