"""Streaming benchmark: answers per minute and frame-to-first-token, all tokens vs VisionZip.

CLIP ViT-L/14-336 + a Qwen2-0.5B-shaped decoder in int8 (export's default), from
the language bench's cache, plus a `--no-zip` bundle of the same folder, and the
INT8 bench's copy of the K = 64 bundle for `--vision-graph int8`. Each
setting runs `zipvlm stream --json` on the synthetic source at 30 fps in a fresh
process; the first answers (one, or the window's length) warm up and fill the
window and are not counted. Answers per minute come from the answers' completion
times; frame-to-first-token is capture -> first token, as each answer reports it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from zipvlm.bench.language import MODELS, BenchPlan, prepare
from zipvlm.bench.report import PREFIX_COLUMNS, STREAM_COLUMNS, machine, machine_line, markdown_table
from zipvlm.bench.runtime_timing import QUESTION, median_ms

MODEL = "Qwen2-0.5B"
# What a robot's stream would send: instructions that stay the same for every frame.
ROBOT_SYSTEM = (
    "You are the perception module of a delivery robot driving on sidewalks. Look at the "
    "camera frame and report, in one short sentence, anything that blocks the path: "
    "people, bicycles, cars, open doors, steps or kerbs, and the state of any traffic "
    "light. Say 'clear' when nothing does."
)


@dataclass(frozen=True)
class Setting:
    name: str
    full: bool  # every token (the --no-zip bundle) or VisionZip's K = 64
    window: int
    vision_graph: str = "float"  # "int8": the Q/DQ graph, from the INT8 bench's bundle


SETTINGS = (
    Setting("all tokens", True, 1),
    Setting("VisionZip K=64", False, 1),
    Setting("VisionZip K=64, --vision-graph int8", False, 1, "int8"),
    Setting("VisionZip K=64, --window 8", False, 8),
    Setting("all tokens, --window 8", True, 8),
)
INT8_BUNDLE = Path("artifacts/bench/int8/bundle")  # what `python -m zipvlm.bench.int8` writes


def full_bundle(cache: Path) -> Path:
    """The --no-zip int8 bundle of the language bench's 0.5B folder (built once)."""
    from zipvlm.bundle.format import is_bundle
    from zipvlm.export.pipeline import ExportOptions, export_bundle

    out = cache / MODEL / "bundle-int8-full"
    if not is_bundle(out):
        print(f"[{MODEL}] zipvlm export --no-zip --quant int8", file=sys.stderr)
        export_bundle(ExportOptions(cache / MODEL / "llava", out, None, quant="int8"))
    return out


def run_setting(bundle: Path, setting: Setting, answers: int, new_tokens: int) -> list[dict]:
    command = [
        sys.executable,
        "-m",
        "zipvlm.cli",
        "stream",
        "--bundle",
        str(bundle),
        "--source",
        "synthetic",
        "--fps",
        "30",
        "--prompt",
        QUESTION,
        "--json",
        "--window",
        str(setting.window),
        "--max-new-tokens",
        str(new_tokens),
        "--max-frames",
        str(answers + setting.window),
        "--vision-graph",
        setting.vision_graph,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"zipvlm stream failed: {done.stderr.strip()[-2000:]}")
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    errors = [line["error"] for line in lines if "error" in line]
    if errors:
        raise RuntimeError(f"{setting.name}: {errors[0]}")
    return lines[setting.window :]  # warm-up, and the window filling up


def summarise(setting: Setting, answers: list[dict]) -> dict:
    done_at = [a["frame_time"] + a["frame_age_ms"] / 1000 for a in answers]
    first_token = sorted(a["timings_ms"]["frame_to_first_token"] for a in answers)
    p95 = first_token[min(len(first_token) - 1, round(0.95 * (len(first_token) - 1)))]
    drops = [b["dropped_frames"] - a["dropped_frames"] for a, b in pairwise(answers)]
    return {
        "setting": setting.name,
        "image_tokens": answers[-1]["num_image_tokens"],
        "answers_per_min": 60 * (len(answers) - 1) / (done_at[-1] - done_at[0]),
        "frame_to_first_token_p50_ms": statistics.median(first_token),
        "frame_to_first_token_p95_ms": p95,
        "prefill_ms": statistics.median(a["timings_ms"]["prefill"] for a in answers),
        "dropped_per_answer": statistics.mean(drops),
        "answers": len(answers),
    }


def has_int8_graph(bundle: Path) -> bool:
    from zipvlm.bundle.format import INT8_GRAPH, Bundle, is_bundle

    return is_bundle(bundle) and Bundle.open(bundle, verify_hashes=False).has(INT8_GRAPH)


def prefix_saving(bundle: Path, system: str, repeats: int) -> dict:
    """Prefill of the whole prompt vs prefill after the cached prefix (system prompt and the
    text before the image), median of `repeats`, with the stream's own decoder (2 threads)."""
    from zipvlm.bundle.format import Bundle
    from zipvlm.runtime.prefix_cache import DirectDecoder
    from zipvlm.runtime.prompt import PromptBuilder

    opened = Bundle.open(bundle, verify_hashes=False)
    tokens = opened.selection.num_image_tokens
    prompts = PromptBuilder(opened)
    ids = prompts.encode(prompts.chat_text(QUESTION, 1, system))
    split = ids.index(opened.language.image_token_id)
    decoder = DirectDecoder(opened)
    visual = (
        np.random.default_rng(0).standard_normal((1, tokens, opened.language.hidden_size)).astype(np.float32)
    )
    _, prefix = decoder.forward(ids[:split], visual, decoder.empty)

    whole = median_ms(lambda: decoder.forward(ids, visual, decoder.empty), repeats)
    cached = median_ms(lambda: decoder.forward(ids[split:], visual, prefix), repeats)
    return {
        "image_tokens": tokens,
        "prompt_tokens": len(ids),
        "prefix_tokens": split,
        "prefill_whole_ms": whole,
        "prefill_cached_ms": cached,
        "saved_ms": whole - cached,
        "saved_pct": 100 * (whole - cached) / whole,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zipvlm.bench.stream",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--answers", type=int, default=12, help="counted answers per setting")
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens per answer")
    parser.add_argument("--repeats", type=int, default=5, help="timed prefills per prefix figure")
    parser.add_argument(
        "--prefix-only",
        action="store_true",
        help="only the prefill saved by the cached prefix (not the stream runs)",
    )
    parser.add_argument("--cache", type=Path, default=Path("artifacts/bench/cache"))
    parser.add_argument(
        "--int8-bundle",
        type=Path,
        default=INT8_BUNDLE,
        help="K = 64 bundle with vision.int8.onnx (python -m zipvlm.bench.int8 writes it)",
    )
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench"))
    args = parser.parse_args(argv)
    spec = MODELS[MODEL]
    plan = BenchPlan({MODEL: spec}, quants=("int8",), selections=())  # the bundle only, no extra graphs
    zipped = prepare(MODEL, spec, plan, args.cache).bundles["int8"]
    full = full_bundle(args.cache)
    context = spec.max_positions
    rows, skipped = [], []
    for setting in () if args.prefix_only else SETTINGS:
        tokens = (576 if setting.full else 64) * setting.window
        if tokens + args.new_tokens + 64 > context:
            skipped.append(f"{setting.name}: {tokens} image tokens do not fit the {context}-token context")
            continue
        bundle = full if setting.full else args.int8_bundle if setting.vision_graph == "int8" else zipped
        if setting.vision_graph == "int8" and not has_int8_graph(bundle):
            skipped.append(
                f"{setting.name}: {bundle} has no vision.int8.onnx (run python -m zipvlm.bench.int8 first)"
            )
            continue
        print(f"[stream] {setting.name}", file=sys.stderr)
        answers = run_setting(bundle, setting, args.answers, args.new_tokens)
        rows.append(summarise(setting, answers))
    print("[stream] prefill saved by the cached prompt prefix", file=sys.stderr)
    saving = [prefix_saving(bundle, ROBOT_SYSTEM, args.repeats) for bundle in (full, zipped)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "stream.json").write_text(
        json.dumps(
            {
                "machine": machine(),
                "rows": rows,
                "skipped": skipped,
                "prefix_cache": saving,
                "system": ROBOT_SYSTEM,
            },
            indent=2,
        )
    )
    print(machine_line())
    print(markdown_table(rows, STREAM_COLUMNS))
    for line in skipped:
        print(f"skipped: {line}")
    print(f"\nPrefill saved per frame by the cached prefix (system prompt: {ROBOT_SYSTEM!r})\n")
    print(markdown_table(saving, PREFIX_COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
