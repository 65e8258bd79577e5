"""`zipvlm demo`: build a tiny model, export it, stream the synthetic camera to it (offline)."""

from __future__ import annotations

import argparse
from pathlib import Path

DEMO_FAMILIES = (
    "llava",
    "qwen2.5-vl",
    "llava-next",
    "llava-onevision",
)  # zipvlm.export.demo.DEMOS, named here without importing torch


def register(commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="build a tiny random LLaVA, LLaVA-NeXT/OneVision or Qwen2.5-VL, export it, and stream a "
        "synthetic camera to it",
        description="Build a tiny random-weight LLaVA or Qwen2.5-VL (offline), export it with VisionZip, "
        "verify it, then stream the synthetic source through it, printing answers "
        "and latencies. The answers of a random model are noise.",
    )
    demo.add_argument(
        "--workdir",
        type=Path,
        default=Path("artifacts"),
        help="where the tiny model and its bundle go (default ./artifacts)",
    )
    demo.add_argument("--seconds", type=float, default=10.0, help="how long to stream (default 10)")
    demo.add_argument(
        "--family",
        choices=DEMO_FAMILIES,
        default="llava",
        help="which tiny model: llava (CLIP + Llama, default), qwen2.5-vl, llava-next or llava-onevision "
        "(the last three for the 640x480 frames; any-res views with VisionZip per view)",
    )
    demo.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from zipvlm.export.demo import run_demo as demo

    demo(args.workdir, args.seconds, args.family)
    return 0
