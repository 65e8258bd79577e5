"""Qwen2.5-VL benchmark: vision, prefill, time to first token, int4 decoding and peak RSS, every
merged token against VisionZip.

A Qwen2.5-VL-3B-shaped folder with random weights (bfloat16, as the checkpoints ship:
zipvlm.models.tiny_qwen.QWEN25VL_3B), for 448x448 and 896x896 camera frames. 448x448
gives 256 merged tokens: all of them, or D + C = 64 (54 + 10). 896x896 gives 1024: all,
64, or 128 (108 + 20). Every setting is a bundle written by `zipvlm export`; the int4
decoder is built once and linked into the others (ExportOptions.language_from). Each
bundle is timed by `zipvlm.bench.runtime_timing` in a fresh process (runtime only, on a
frame of its camera's size, the prompt at the kept tokens' 3D positions); peak RSS is
that of one `zipvlm run` on it (load, one frame, one answer).

TTFT = preprocess + vision graph + prefill + first token, from medians; ratios are
against every merged token of the same camera size.

Built folder and bundles are cached under --cache: the folder is about 7.5 GB, each
bundle's vision graph 2.7 GB (float32), the int4 decoder about 2 GB, once.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from zipvlm.bench.language import add_timing_arguments, run_peak_rss_mb, time_bundle, ttft_row
from zipvlm.bench.report import QWEN_COLUMNS, machine, machine_line, markdown_table
from zipvlm.bundle.format import Bundle
from zipvlm.models.tiny_qwen import QWEN25VL_3B, TinyQwenSpec, build_tiny_qwen25vl
from zipvlm.models.visionzip import VisionZipConfig


@dataclass(frozen=True)
class Setting:
    camera: tuple[int, int]  # (width, height) of the frames: export --image-size
    selection: VisionZipConfig | None  # None: every merged token (--no-zip)

    @property
    def name(self) -> str:
        width, height = self.camera
        zipped = f"D{self.selection.dominant}+C{self.selection.contextual}" if self.selection else "all"
        return f"{width}x{height}-{zipped}"


SETTINGS = (
    Setting((448, 448), None),
    Setting((448, 448), VisionZipConfig(54, 10)),
    Setting((896, 896), None),
    Setting((896, 896), VisionZipConfig(54, 10)),
    Setting((896, 896), VisionZipConfig(108, 20)),
)


@dataclass(frozen=True)
class QwenPlan:
    spec: TinyQwenSpec = QWEN25VL_3B
    settings: tuple[Setting, ...] = SETTINGS
    quant: str = "int4"  # the decoder's weights
    repeats: int = 3
    new_tokens: int = 32
    threads: int = 2


def prepare(plan: QwenPlan, cache: Path) -> dict[Setting, Path]:
    """Build (or reuse) the random folder and one bundle per setting, the first with the decoder."""
    from zipvlm.bundle.format import is_bundle
    from zipvlm.export.pipeline import ExportOptions, export_bundle

    folder, stamp = cache / "qwen2.5-vl", cache / "spec.json"
    if not stamp.exists() or json.loads(stamp.read_text()) != asdict(plan.spec):
        shutil.rmtree(cache, ignore_errors=True)
        print("writing a random Qwen2.5-VL folder", file=sys.stderr)
        build_tiny_qwen25vl(folder, plan.spec)
        stamp.write_text(json.dumps(asdict(plan.spec)))
    bundles: dict[Setting, Path] = {}
    for setting in plan.settings:
        bundles[setting] = cache / f"bundle-{plan.quant}-{setting.name}"
        if not is_bundle(bundles[setting]):
            print(f"[{setting.name}] exporting", file=sys.stderr)
            first = next(iter(bundles.values()))
            options = ExportOptions(
                folder,
                bundles[setting],
                setting.selection,
                quant=plan.quant,
                image_size=setting.camera,
                language_from=None if first == bundles[setting] else first,
            )
            export_bundle(options)
    return bundles


def run(plan: QwenPlan, cache: Path) -> list[dict]:
    """Build everything first, so that the timings run on a machine doing nothing else."""
    bundles = prepare(plan, cache)
    rows = []
    for setting, bundle in bundles.items():
        print(f"[{setting.name}] timing", file=sys.stderr)
        tokens = Bundle.open(bundle, verify_hashes=False).selection.num_image_tokens
        timing = time_bundle(
            bundle, {tokens: bundle / "vision.onnx"}, plan.repeats, plan.new_tokens, plan.threads, True
        )
        row = timing["rows"][0]
        width, height = setting.camera
        rss = run_peak_rss_mb(bundle, cache, plan.new_tokens, (height, width, 3))
        rows.append(
            {
                "setting": setting.name,
                "camera": f"{width}x{height}",
                **ttft_row(row, rss),
                "load_s": timing["load_s"],
            }
        )
    for row in rows:  # against every merged token of the same camera size
        full = next(r for r in rows if r["camera"] == row["camera"] and r["setting"].endswith("-all"))
        row["prefill_ratio"] = full["prefill_ms"] / row["prefill_ms"]
        row["ttft_ratio"] = full["ttft_ms"] / row["ttft_ms"]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zipvlm.bench.qwen",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_timing_arguments(parser, Path("artifacts/bench/qwen-cache"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="  %(message)s")  # the export's stage lines
    plan = QwenPlan(repeats=args.repeats, new_tokens=args.new_tokens, threads=args.threads)
    rows = run(plan, args.cache)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": machine(),
        "repeats": plan.repeats,
        "new_tokens": plan.new_tokens,
        "threads": plan.threads,
        "quant": plan.quant,
        "spec": asdict(plan.spec),
    }
    (args.out / "qwen.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(machine_line())
    print(markdown_table(rows, QWEN_COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
