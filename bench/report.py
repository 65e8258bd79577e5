"""Tables and plots for benchmark rows (dicts from bench.vision and bench.language)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# CPU features that change which kernels onnxruntime picks (int8 above all).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def machine() -> dict[str, Any]:
    """The CPU a bench ran on: int8 timings differ several-fold with and without VNNI/AMX."""
    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "isa": [f for f in ISA_FLAGS if f in flags]}


def machine_line() -> str:
    facts = machine()
    return f"machine: {facts['cpu']}, {facts['cores']} cores, {' '.join(facts['isa']) or 'no AVX2'}"


# (row key, column title, format)
VISION_COLUMNS = (
    ("tower", "tower", "{}"),
    ("tokens", "N", "{}"),
    ("kept", "K", "{}"),
    ("encoder_ms", "(a) encoder ms", "{:.0f}"),
    ("visionzip_ms", "(b) vision.onnx ms", "{:.0f}"),
    ("zip_over_encoder", "(b)/(a)", "{:.3f}x"),
    ("upstream_ms", "(c) upstream ms", "{:.0f}"),
    ("upstream_over_zip", "(c)/(b)", "{:.2f}x"),
    ("images_per_s", "images/s (b)", "{:.2f}"),
    ("visionzip_no_graph_opt_ms", "(b) no ORT graph opt ms", "{:.0f}"),
    ("visionzip_one_thread_ms", "(b) 1 thread ms", "{:.0f}"),
    ("selection_ms", "selection kernels ms", "{:.1f}"),
    ("projector_ms", "projector kernels ms", "{:.1f}"),
)


LANGUAGE_COLUMNS = (
    ("decoder", "decoder", "{}"),
    ("quant", "weights", "{}"),
    ("image_tokens", "image tokens", "{}"),
    ("prompt_tokens", "prompt tokens", "{}"),
    ("vision_ms", "vision ms", "{:.0f}"),
    ("prefill_ms", "prefill ms", "{:.0f}"),
    ("prefill_ratio", "prefill speed-up", "{:.2f}x"),
    ("ttft_ms", "TTFT ms", "{:.0f}"),
    ("ttft_ratio", "TTFT speed-up", "{:.2f}x"),
    ("flop_ceiling", "FLOP ceiling", "{:.2f}x"),
    ("decode_tokens_per_s", "decode tok/s", "{:.1f}"),
    ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
)

# Qwen2.5-VL's bench: one decoder (int4), so the camera instead of the decoder and its weights.
QWEN_COLUMNS = (
    ("camera", "camera", "{}"),
    *(column for column in LANGUAGE_COLUMNS if column[0] not in ("decoder", "quant", "flop_ceiling")),
)
# The any-res bench: every token against VisionZip per view, the paper's prefill speed-up beside ours.
ANYRES_COLUMNS = (
    ("model", "model", "{}"),
    ("camera", "camera", "{}"),
    ("quant", "decoder", "{}"),
    ("image_tokens", "image tokens", "{}"),
    ("prompt_tokens", "prompt tokens", "{}"),
    ("vision_ms", "vision ms", "{:.0f}"),
    ("prefill_ms", "prefill ms", "{:.0f}"),
    ("prefill_speedup", "prefill speed-up", "{:.2f}x"),
    ("paper_prefill_speedup", "paper's prefill speed-up", "{}"),
    ("ttft_ms", "TTFT ms", "{:.0f}"),
    ("ttft_speedup", "TTFT speed-up", "{:.2f}x"),
    ("decode_tokens_per_s", "decode tok/s", "{:.1f}"),
    ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
)

STREAM_COLUMNS = (
    ("setting", "setting", "{}"),
    ("image_tokens", "image tokens", "{}"),
    ("answers_per_min", "answers/min", "{:.1f}"),
    ("frame_to_first_token_p50_ms", "frame-to-first-token p50 ms", "{:.0f}"),
    ("frame_to_first_token_p95_ms", "p95 ms", "{:.0f}"),
    ("prefill_ms", "prefill ms", "{:.0f}"),
    ("dropped_per_answer", "frames dropped per answer", "{:.0f}"),
)
GPU_COLUMNS = (
    ("pair", "tower -> language model", "{}"),
    ("setting", "setting", "{}"),
    ("prompt_tokens", "prompt tokens", "{}"),
    ("vision_ms", "vision ms", "{:.2f}"),
    ("vision_ratio", "vision speed-up", "{:.2f}x"),
    ("prefill_ms", "prefill ms", "{:.2f}"),
    ("prefill_ratio", "prefill speed-up", "{:.2f}x"),
    ("first_token_ms", "vision + prefill ms", "{:.2f}"),
    ("first_token_ratio", "vision + prefill speed-up", "{:.2f}x"),
)
PREFIX_COLUMNS = (
    ("image_tokens", "image tokens", "{}"),
    ("prompt_tokens", "prompt tokens", "{}"),
    ("prefix_tokens", "cached prefix tokens", "{}"),
    ("prefill_whole_ms", "prefill, whole prompt ms", "{:.0f}"),
    ("prefill_cached_ms", "prefill after the cached prefix ms", "{:.0f}"),
    ("saved_ms", "saved per frame ms", "{:.0f}"),
    ("saved_pct", "saved %", "{:.1f}"),
)


def markdown_table(rows: list[dict[str, Any]], columns: tuple = VISION_COLUMNS) -> str:
    header = "| " + " | ".join(title for _, title, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt.format(row[key]) for key, _, fmt in columns) + " |" for row in rows]
    return "\n".join([header, rule, *body])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_bar_chart(rows: list[dict[str, Any]], path: Path) -> Path:
    """Grouped bars: (a), (b), (c) latency per tower."""
    plt = _pyplot()

    stages = (
        ("encoder_ms", "(a) encoder to layer L"),
        ("visionzip_ms", "(b) vision.onnx"),
        ("upstream_ms", "(c) upstream eager + VisionZip"),
    )
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.27
    for i, (key, label) in enumerate(stages):
        xs = [j + (i - 1) * width for j in range(len(rows))]
        bars = ax.bar(xs, [row[key] for row in rows], width, label=label)
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_xticks(range(len(rows)), [row["tower"] for row in rows])
    ax.set_ylabel("ms per image (median, batch 1)")
    ax.set_title("Vision graph latency, onnxruntime CPU vs upstream PyTorch")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_language_plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """TTFT and decode speed against image tokens, one line per decoder and precision."""
    plt = _pyplot()
    fig, (ttft, decode) = plt.subplots(1, 2, figsize=(11, 4))
    series: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        series.setdefault(f"{row['decoder']} {row['quant']}", []).append(row)
    for label, points in series.items():
        points = sorted(points, key=lambda row: row["image_tokens"])
        tokens = [row["image_tokens"] for row in points]
        ttft.plot(tokens, [row["ttft_ms"] for row in points], marker="o", label=label)
        decode.plot(tokens, [row["decode_tokens_per_s"] for row in points], marker="o", label=label)
    ttft.set(
        xlabel="image tokens fed to the LLM",
        ylabel="time to first token, ms (median)",
        title="TTFT: preprocess + vision + prefill",
    )
    decode.set(xlabel="image tokens fed to the LLM", ylabel="decode tokens/s (median)", title="Decode speed")
    ttft.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_gpu_plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Stacked vision + prefill bars per setting, one group per tower/language pair."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    labels = [f"{row['pair']}\n{row['setting']}" for row in rows]
    ax.bar(labels, [row["vision_ms"] for row in rows], label="vision graph")
    bars = ax.bar(
        labels,
        [row["prefill_ms"] for row in rows],
        bottom=[row["vision_ms"] for row in rows],
        label="prefill",
    )
    ax.bar_label(bars, labels=[f"{row['first_token_ms']:.1f}" for row in rows], fontsize=7)
    ax.set_ylabel("ms (median, batch 1)")
    ax.set_title("Vision + prefill on the GPU, every token vs VisionZip")
    ax.tick_params(axis="x", labelsize=6)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
