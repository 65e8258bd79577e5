"""Tables and plots for benchmark rows (dicts from bench.vision)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLUMNS = (
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


def markdown_table(rows: list[dict[str, Any]]) -> str:
    header = "| " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS) + " |"
            for row in rows]
    return "\n".join([header, rule, *body])


def save_bar_chart(rows: list[dict[str, Any]], path: Path) -> Path:
    """Grouped bars: (a), (b), (c) latency per tower."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = (("encoder_ms", "(a) encoder to layer L"), ("visionzip_ms", "(b) vision.onnx"),
              ("upstream_ms", "(c) upstream eager + VisionZip"))
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
