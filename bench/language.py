"""Language-side benchmark: time to first token and decode speed, all tokens vs VisionZip.

A CLIP ViT-L/14-336 tower (LLaVA-1.5's: 576 tokens after its 'default'
selection) feeding Qwen2-0.5B- and Qwen2-1.5B-shaped language models, random
weights. Each decoder precision is a real bundle written by `zipvlm export`;
vision graphs for 576 tokens (--no-zip) and K = 64, 128, 192 come from the same
folder. Each bundle is timed by `zipvlm.bench.runtime_timing` in a fresh process
(runtime only, no torch), which reports its peak RSS.

TTFT = preprocess (640x480 frame) + vision graph + prefill + first token, from
medians. Peak RSS is that of `zipvlm run` (K = 64, 32 new tokens) on the
bundle, a process holding exactly what a deployed runtime holds. The FLOP
ceiling of a ratio counts the tower to the feature layer, the projector and the
language model's prefill (logits at every prompt position, as the exported graph
computes them).

Built folders, bundles and graphs are cached under --cache (a few GB per
decoder; the first run builds them, about 10 minutes per decoder shape).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from zipvlm.bench.report import LANGUAGE_COLUMNS, machine, machine_line, markdown_table, save_language_plot
from zipvlm.models.tiny import TinySpec, build_tiny_llava
from zipvlm.models.visionzip import VisionZipConfig

CLIP_L_TOWER = dict(
    family="clip-qwen2",
    image_size=336,
    patch_size=14,
    vision_width=1024,
    vision_heads=16,
    vision_layers=24,
    max_positions=4096,
)
QWEN2_VOCAB = 151936
MODELS = {
    "Qwen2-0.5B": TinySpec(
        **CLIP_L_TOWER,
        text_width=896,
        text_layers=24,
        text_heads=14,
        text_kv_heads=2,
        text_intermediate=4864,
        text_vocab_size=QWEN2_VOCAB,
    ),
    "Qwen2-1.5B": TinySpec(
        **CLIP_L_TOWER,
        text_width=1536,
        text_layers=28,
        text_heads=12,
        text_kv_heads=2,
        text_intermediate=8960,
        text_vocab_size=QWEN2_VOCAB,
    ),
}
# None: every token (--no-zip); then the paper's LLaVA-1.5 settings for 64, 128 and 192.
SELECTIONS = (None, VisionZipConfig(54, 10), VisionZipConfig(108, 20), VisionZipConfig(162, 30))
QUANTS = ("none", "int8", "int4")
BUNDLE_SELECTION = VisionZipConfig(54, 10)  # the vision graph inside each bundle
RSS_POLL_S = 0.02  # VmHWM is a high-water mark: only growth in the last poll interval can be missed


@dataclass(frozen=True)
class BenchPlan:
    models: dict[str, TinySpec]
    quants: tuple[str, ...] = QUANTS
    selections: tuple[VisionZipConfig | None, ...] = SELECTIONS
    repeats: int = 3
    new_tokens: int = 32
    threads: int = 2
    camera: tuple[int, int] | None = None  # (width, height): any-res folders' --image-size


@dataclass
class Prepared:
    bundles: dict[str, Path]  # quant -> bundle
    graphs: dict[int, Path]  # image tokens -> vision graph
    vocab: int  # rows of the language model's head


def prepare(name: str, spec: TinySpec, plan: BenchPlan, cache: Path) -> Prepared:
    """Build (or reuse) the random folder, one bundle per precision and the vision graphs."""
    from zipvlm.bundle.format import is_bundle
    from zipvlm.export.family import open_family
    from zipvlm.export.pipeline import ExportOptions, export_bundle
    from zipvlm.export.vision import export_vision_graph
    from zipvlm.models.llava import open_llava_folder

    root = cache / name
    folder = root / "llava"
    stamp = root / "spec.json"
    if not stamp.exists() or json.loads(stamp.read_text()) != asdict(spec):
        shutil.rmtree(root, ignore_errors=True)
        print(f"[{name}] writing a random LLaVA folder", file=sys.stderr)
        build_tiny_llava(folder, spec)
        stamp.write_text(json.dumps(asdict(spec)))
    bundles = {}
    for quant in plan.quants:
        bundles[quant] = root / f"bundle-{quant}"
        if not is_bundle(bundles[quant]):
            print(f"[{name}] zipvlm export --quant {quant}", file=sys.stderr)
            options = ExportOptions(
                folder, bundles[quant], BUNDLE_SELECTION, quant=quant, image_size=plan.camera
            )
            export_bundle(options)
    family = open_family(folder, plan.camera)
    graphs = {}
    for selection in plan.selections:
        tokens = family.describe(root, selection, [], {}).selection.num_image_tokens
        graphs[tokens] = root / f"vision-{tokens}.onnx"
        if not graphs[tokens].exists():
            print(f"[{name}] vision graph, {tokens} tokens", file=sys.stderr)
            with tempfile.TemporaryDirectory(dir=root) as work:
                graph = family.vision_graph(selection)
                path = export_vision_graph(graph, family.input_hw, Path(work) / "vision.onnx", family.views)
                path.rename(graphs[tokens])
                del graph  # a real-size tower: one at a time
    return Prepared(bundles, graphs, open_llava_folder(folder).config.text_config.vocab_size)


def time_bundle(
    bundle: Path, graphs: dict[int, Path], repeats: int, new_tokens: int, threads: int, time_vision: bool
) -> dict:
    """Run zipvlm.bench.runtime_timing in a fresh interpreter and read its JSON."""
    command = [
        sys.executable,
        "-m",
        "zipvlm.bench.runtime_timing",
        "--bundle",
        str(bundle),
        "--repeats",
        str(repeats),
        "--new-tokens",
        str(new_tokens),
        "--threads",
        str(threads),
    ]
    command += [arg for tokens, path in graphs.items() for arg in ("--vision", f"{tokens}={path}")]
    if time_vision:
        command.append("--time-vision")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"timing {bundle} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout)


def add_timing_arguments(parser: argparse.ArgumentParser, cache: Path) -> None:
    """The flags of every bench timed by bench.runtime_timing."""
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (median)")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens decoded per run")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for onnxruntime")
    parser.add_argument(
        "--cache", type=Path, default=cache, help=f"built folders and bundles (default {cache})"
    )
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench"))


def ttft_row(timed: dict, peak_rss_mb: float) -> dict:
    """One vision graph's figures from bench.runtime_timing (run with --time-vision): TTFT is
    preprocess + vision + prefill + first token."""
    return {
        "image_tokens": timed["image_tokens"],
        "prompt_tokens": timed["prompt_tokens"],
        "preprocess_ms": timed["preprocess_ms"],
        "vision_ms": timed["vision_ms"],
        "prefill_ms": timed["prefill_ms"],
        "ttft_ms": timed["preprocess_ms"] + timed["vision_ms"] + timed["first_token_ms"],
        "decode_tokens_per_s": timed["decode_tokens_per_s"],
        "peak_rss_mb": peak_rss_mb,
    }


def vm_hwm_kb(pid: int) -> int:
    """The process's peak resident set (VmHWM) so far, in kB; 0 once it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def run_peak_rss_mb(
    bundle: Path, workdir: Path, new_tokens: int, frame_shape: tuple[int, int, int] | None = None
) -> float:
    """Peak RSS of one `zipvlm run` on `bundle` (load, one frame, one answer).

    Read from the child's own VmHWM while it runs, not from wait4's ru_maxrss: the child
    is spawned by vfork, and at its exec the kernel records this (large) bench process's
    high-water mark as the child's, so ru_maxrss reports the bench, not the run.
    """
    import cv2

    from zipvlm.bench.runtime_timing import FRAME_SHAPE, QUESTION, camera_frame

    frame = workdir / "frame.png"
    cv2.imwrite(str(frame), camera_frame(frame_shape or FRAME_SHAPE))
    command = [
        sys.executable,
        "-m",
        "zipvlm.cli",
        "run",
        "--bundle",
        str(bundle),
        "--image",
        str(frame),
        "--prompt",
        QUESTION,
        "--max-new-tokens",
        str(new_tokens),
        "--json",
    ]
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        peak_kb = 0
        while process.poll() is None:
            peak_kb = max(peak_kb, vm_hwm_kb(process.pid))
            time.sleep(RSS_POLL_S)
        if process.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"zipvlm run on {bundle} failed: {errors.read().decode()[-2000:]}")
    return peak_kb / 1024


def vision_flops(spec: TinySpec, image_tokens: int) -> float:
    """Tower up to the feature layer, plus the two-layer projector on the tokens it keeps."""
    clip = spec.family.startswith("clip")
    patches = (spec.image_size // spec.patch_size) ** 2
    n, d = patches + clip, spec.vision_width
    layers_run = spec.vision_layers - 1 if clip else spec.vision_layers  # feature layer -2 / -1
    per_layer = 2 * n * (4 * d * d + 2 * d * 4 * d) + 4 * n * n * d
    patch_embed = 2 * patches * 3 * spec.patch_size**2 * d
    h = spec.text_width
    return patch_embed + layers_run * per_layer + 2 * image_tokens * (d * h + h * h)


def prefill_flops(spec: TinySpec, prompt_tokens: int, vocab: int) -> float:
    """Every layer on every prompt token, full (unmasked) attention, and the head at every position."""
    s, d = prompt_tokens, spec.text_width
    kv = d // spec.text_heads * spec.text_kv_heads
    inter = spec.text_intermediate or 3 * d
    per_layer = 2 * s * (2 * d * d + 2 * d * kv + 3 * d * inter) + 4 * s * s * d
    return spec.text_layers * per_layer + 2 * s * d * vocab


def rows_for(
    name: str,
    spec: TinySpec,
    quant: str,
    timing: dict,
    vision: dict[int, dict],
    vocab: int,
    peak_rss_mb: float,
) -> list[dict]:
    """Table rows of one bundle: ratios are against the same bundle fed every token."""
    by_tokens = {row["image_tokens"]: row for row in timing["rows"]}
    rows = []
    for tokens, row in sorted(by_tokens.items(), reverse=True):
        seen = vision[tokens]
        ttft = seen["preprocess_ms"] + seen["vision_ms"] + row["first_token_ms"]
        flops = vision_flops(spec, tokens) + prefill_flops(spec, row["prompt_tokens"], vocab)
        rows.append(
            {
                "decoder": name,
                "quant": quant,
                "image_tokens": tokens,
                "prompt_tokens": row["prompt_tokens"],
                "preprocess_ms": seen["preprocess_ms"],
                "vision_ms": seen["vision_ms"],
                "prefill_ms": row["prefill_ms"],
                "ttft_ms": ttft,
                "decode_tokens_per_s": row["decode_tokens_per_s"],
                "peak_rss_mb": peak_rss_mb,
                "load_s": timing["load_s"],
                "flops": flops,
            }
        )
    reference = rows[0]  # every token
    for row in rows:
        row["prefill_ratio"] = reference["prefill_ms"] / row["prefill_ms"]
        row["ttft_ratio"] = reference["ttft_ms"] / row["ttft_ms"]
        row["flop_ceiling"] = reference["flops"] / row["flops"]
    return rows


def run(plan: BenchPlan, cache: Path) -> list[dict]:
    """Build everything first, so the timings run on a machine doing nothing else."""
    prepared_models = {name: prepare(name, spec, plan, cache) for name, spec in plan.models.items()}
    rows = []
    for name, spec in plan.models.items():
        prepared = prepared_models[name]
        vision: dict[int, dict] = {}
        for quant in plan.quants:
            print(f"[{name}] timing --quant {quant}", file=sys.stderr)
            timing = time_bundle(
                prepared.bundles[quant],
                prepared.graphs,
                plan.repeats,
                plan.new_tokens,
                plan.threads,
                time_vision=not vision,
            )
            vision = vision or {row["image_tokens"]: row for row in timing["rows"]}
            rss = run_peak_rss_mb(prepared.bundles[quant], cache, plan.new_tokens)
            rows += rows_for(name, spec, quant, timing, vision, prepared.vocab, rss)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zipvlm.bench.language",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--models",
        default=",".join(MODELS),
        help=f"comma-separated decoder shapes (default: {','.join(MODELS)})",
    )
    parser.add_argument("--quants", default=",".join(QUANTS), help="decoder precisions to time")
    add_timing_arguments(parser, Path("artifacts/bench/cache"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="  %(message)s")  # the export's stage lines
    unknown = [m for m in args.models.split(",") if m not in MODELS]
    if unknown:
        parser.error(f"unknown --models {','.join(unknown)} (choose from {','.join(MODELS)})")
    plan = BenchPlan(
        {m: MODELS[m] for m in args.models.split(",")},
        tuple(args.quants.split(",")),
        SELECTIONS,
        args.repeats,
        args.new_tokens,
        args.threads,
    )
    rows = run(plan, args.cache)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": machine(),
        "repeats": plan.repeats,
        "new_tokens": plan.new_tokens,
        "threads": plan.threads,
        "frame": "640x480",
        "models": {m: asdict(s) for m, s in plan.models.items()},
    }
    (args.out / "language.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    save_language_plot(rows, args.out / "language.png")
    print(machine_line())
    print(markdown_table(rows, LANGUAGE_COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
