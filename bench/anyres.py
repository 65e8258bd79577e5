"""Any-res benchmark: LLaVA-NeXT's 2,880 view tokens against VisionZip's 160 / 320 / 640, and
LLaVA-OneVision-0.5B at a VGA camera, all tokens against pruned; CPU, onnxruntime.

- LLaVA-NeXT-7B's vision side at 672x672: CLIP ViT-L/14-336, 2x2 crops + the whole frame
  = 5 views x 576 = 2,880 tokens (transformers feeds 2,928: + 48 image_newline rows),
  at a 0.5B language width (Qwen2-0.5B's shape: a 7B decoder does not fit this CPU's time);
  VisionZip per view (D, C) = (27, 5), (54, 10), (108, 20): 32 / 64 / 128 per view, the
  paper's 160 / 320 / 640. (54, 10) is the authors' setting for 64; 32 and 128 keep its
  D : C ratio (5.4 : 1).
- LLaVA-OneVision-0.5B (SigLIP so400m/14-384 + Qwen2-0.5B) at 640x480: 5 views, 2,929 tokens
  as transformers feeds them, against (54, 10) per view = 320.

Each setting is a vision graph written by `zipvlm export`'s own code for that camera; one
bundle per model (int8 decoder by default) is timed by the runtime alone in a fresh process
(bench.runtime_timing), with a camera-sized frame: preprocess + vision + prefill + first
token = TTFT, medians; decode tokens/s; peak RSS of one `zipvlm run`. The paper's
prefill speed-up is printed beside ours where it states one (LLaVA-NeXT-7B, 2,880 -> 160
tokens: 8x, on an A800 GPU).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from zipvlm.bench.language import (
    BenchPlan,
    add_timing_arguments,
    prepare,
    run_peak_rss_mb,
    time_bundle,
    ttft_row,
)
from zipvlm.bench.report import ANYRES_COLUMNS, machine, machine_line, markdown_table
from zipvlm.models.tiny import TinySpec
from zipvlm.models.visionzip import VisionZipConfig

QWEN2_05B_TEXT = dict(
    text_width=896,
    text_layers=24,
    text_heads=14,
    text_kv_heads=2,
    text_intermediate=4864,
    text_vocab_size=151936,
    max_positions=8192,
)
CLIP_L_336 = dict(image_size=336, patch_size=14, vision_width=1024, vision_heads=16, vision_layers=24)
SIGLIP_SO400M_384 = dict(
    image_size=384,
    patch_size=14,
    vision_width=1152,
    vision_heads=16,
    vision_layers=27,
    vision_intermediate=4304,
)
PAPER_PREFILL_SPEEDUP = {160: 8.0}  # VisionZip's abstract: LLaVA-NeXT-7B, 2,880 -> 160 tokens


@dataclass(frozen=True)
class AnyresCase:
    """A model shape at a camera size, and the selections timed on it."""

    name: str
    spec: TinySpec
    camera: tuple[int, int]  # (width, height)
    selections: tuple[VisionZipConfig | None, ...]  # None: every token, transformers' layout
    paper: dict[int, float]  # image tokens -> the paper's prefill speed-up, where it gives one


CASES = {
    "next-7b-views": AnyresCase(
        "LLaVA-NeXT-7B views, 0.5B LM",
        TinySpec(family="clip-qwen2", architecture="llava_next", **CLIP_L_336, **QWEN2_05B_TEXT),
        (672, 672),
        (None, VisionZipConfig(27, 5), VisionZipConfig(54, 10), VisionZipConfig(108, 20)),
        PAPER_PREFILL_SPEEDUP,
    ),
    "onevision-0.5b": AnyresCase(
        "LLaVA-OneVision-0.5B",
        TinySpec(
            family="siglip-qwen2", architecture="llava_onevision", **SIGLIP_SO400M_384, **QWEN2_05B_TEXT
        ),
        (640, 480),
        (None, VisionZipConfig(54, 10)),
        {},
    ),
}


def bench_case(key: str, case: AnyresCase, plan: BenchPlan, cache: Path) -> list[dict]:
    """Rows of one case: every selection's vision, prefill and TTFT against every token's."""
    plan = replace(plan, selections=case.selections, camera=case.camera)
    prepared = prepare(key, case.spec, plan, cache)
    quant = plan.quants[0]
    bundle = prepared.bundles[quant]
    print(f"[{key}] timing --quant {quant}", file=sys.stderr)
    timing = time_bundle(bundle, prepared.graphs, plan.repeats, plan.new_tokens, plan.threads, True)
    width, height = case.camera
    rss = run_peak_rss_mb(bundle, cache, plan.new_tokens, (height, width, 3))
    rows = [
        {
            "model": case.name,
            "camera": "{}x{}".format(*case.camera),
            "quant": quant,
            **ttft_row(timed, rss),
        }
        for timed in sorted(timing["rows"], key=lambda r: -r["image_tokens"])
    ]
    full = rows[0]
    for row in rows:
        paper = case.paper.get(row["image_tokens"])
        row["paper_prefill_speedup"] = f"{paper:g}x" if paper else "-"
        row["prefill_speedup"] = full["prefill_ms"] / row["prefill_ms"]
        row["ttft_speedup"] = full["ttft_ms"] / row["ttft_ms"]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zipvlm.bench.anyres",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--cases", default=",".join(CASES), help=f"comma-separated (default {','.join(CASES)})"
    )
    parser.add_argument("--quant", default="int8", choices=("none", "int8", "int4"), help="decoder weights")
    add_timing_arguments(parser, Path("artifacts/bench/cache"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="  %(message)s")  # the export's stage lines
    keys = args.cases.split(",")
    unknown = [key for key in keys if key not in CASES]
    if unknown:
        parser.error(f"unknown --cases {','.join(unknown)} (choose from {','.join(CASES)})")
    plan = BenchPlan({}, (args.quant,), (), args.repeats, args.new_tokens, args.threads)
    rows = [row for key in keys for row in bench_case(key, CASES[key], plan, args.cache)]
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": machine(),
        "repeats": plan.repeats,
        "new_tokens": plan.new_tokens,
        "threads": plan.threads,
        "cases": {key: {**asdict(CASES[key].spec), "camera": CASES[key].camera} for key in keys},
    }
    (args.out / "anyres.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(machine_line())
    print(markdown_table(rows, ANYRES_COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
