"""`make bench` machinery on tiny shapes: it runs, fills every column, and writes its plot.

No timing is asserted; the figures come from `make bench` on real-size shapes.
"""

from __future__ import annotations

import json

import pytest
import torch

from zipvlm.bench.language import BenchPlan, prepare, run
from zipvlm.bench.report import (
    ANYRES_COLUMNS,
    LANGUAGE_COLUMNS,
    PREFIX_COLUMNS,
    QWEN_COLUMNS,
    STREAM_COLUMNS,
    VISION_COLUMNS,
    markdown_table,
    save_bar_chart,
    save_language_plot,
)
from zipvlm.bench.stream import ROBOT_SYSTEM, Setting, prefix_saving, run_setting, summarise
from zipvlm.bench.vision import TowerShape, bench_tower
from zipvlm.models.tiny import TinySpec
from zipvlm.models.visionzip import VisionZipConfig

pytestmark = pytest.mark.slow  # exports or benchmarks real bundles

TINY = TowerShape("tiny CLIP", "clip", 112, 14, 32, 3, 2, 64, -2, 48)


def test_tower_bench_runs_and_reports_every_column(tmp_path):
    result = bench_tower(TINY, VisionZipConfig(20, 4), repeats=1, threads=1, workdir=tmp_path)
    row = result.row()
    assert result.tokens == 65 and result.kept == 24
    assert all(row[key] > 0 for key, _, _ in VISION_COLUMNS if key not in ("tower", "tokens", "kept"))
    table = markdown_table([row])
    assert table.count("\n") == 2 and "tiny CLIP" in table
    assert save_bar_chart([row], tmp_path / "vision.png").stat().st_size > 1000


def test_language_bench_times_real_bundles_and_reports_every_column(tmp_path):
    plan = BenchPlan(
        {"tiny": TinySpec(family="clip-qwen2")},
        quants=("none",),
        selections=(None, VisionZipConfig(54, 10)),
        repeats=1,
        new_tokens=3,
        threads=1,
    )
    rows = run(plan, tmp_path / "cache")
    assert [(row["image_tokens"], row["prompt_tokens"] - row["image_tokens"]) for row in rows] == [
        (576, 40),
        (64, 40),
    ]  # the same text around both
    full, zipped = rows
    assert full["prefill_ratio"] == full["ttft_ratio"] == full["flop_ceiling"] == 1.0
    assert zipped["flop_ceiling"] > 1 and zipped["flops"] < full["flops"]
    assert all(
        row[key] > 0 for row in rows for key, _, _ in LANGUAGE_COLUMNS if key not in ("decoder", "quant")
    )
    assert markdown_table(rows, LANGUAGE_COLUMNS).count("\n") == 3
    assert save_language_plot(rows, tmp_path / "language.png").stat().st_size > 1000
    manifest = tmp_path / "cache/tiny/bundle-none/manifest.json"
    written = manifest.stat().st_mtime_ns
    again = prepare("tiny", plan.models["tiny"], plan, tmp_path / "cache")  # cached: nothing rebuilt
    assert again.bundles["none"] / "manifest.json" == manifest and manifest.stat().st_mtime_ns == written


def test_stream_bench_runs_zipvlm_stream_and_summarises_every_column(tiny_bundles):
    setting = Setting("tiny K=64, --window 2", full=False, window=2)
    answers = run_setting(tiny_bundles["clip-llama"], setting, answers=3, new_tokens=2)
    assert [a["num_image_tokens"] for a in answers] == [128, 128, 128]  # the window is full
    row = summarise(setting, answers)
    assert row["image_tokens"] == 128 and row["answers"] == 3
    assert all(row[key] > 0 for key, _, _ in STREAM_COLUMNS if key not in ("setting", "dropped_per_answer"))
    assert row["frame_to_first_token_p95_ms"] >= row["frame_to_first_token_p50_ms"]


def test_prefix_bench_times_whole_and_cached_prefills(tiny_bundles):
    row = prefix_saving(tiny_bundles["siglip-qwen2"], ROBOT_SYSTEM, repeats=2)
    assert row["image_tokens"] == 64 and row["prefix_tokens"] > 40  # the system prompt is in it
    assert row["prompt_tokens"] > row["prefix_tokens"] + 64  # the image, then the question
    assert row["prefill_whole_ms"] > 0 and row["prefill_cached_ms"] > 0
    assert row["saved_ms"] == row["prefill_whole_ms"] - row["prefill_cached_ms"]
    assert markdown_table([row], PREFIX_COLUMNS).count("\n") == 2


def test_gpu_bench_runs_on_tiny_shapes_and_fills_every_column(tmp_path, capsys):
    from zipvlm.bench import gpu

    language = gpu.LanguageShape("tiny Qwen2", "qwen2", 48, 2, 4, 2, 96, 256)
    rows = gpu.run(
        [(TINY, language)],
        (None, VisionZipConfig(20, 4)),
        repeats=1,
        device=torch.device("cpu"),
        dtype=torch.float32,
    )
    assert [(row["image_tokens"], row["prompt_tokens"]) for row in rows] == [(64, 104), (24, 64)]
    assert rows[0]["first_token_ratio"] == 1.0
    assert all(row[key] > 0 for row in rows for key, _, _ in gpu.GPU_COLUMNS if key.endswith(("ms", "ratio")))
    assert (
        gpu.report(
            rows, {"device": "cpu", "dtype": "float32", "torch": torch.__version__}, tmp_path, as_json=False
        )
        == 0
    )
    assert markdown_table(rows, gpu.GPU_COLUMNS) in capsys.readouterr().out
    assert (tmp_path / "gpu.png").stat().st_size > 1000
    assert json.loads((tmp_path / "gpu.json").read_text())["rows"][1]["setting"] == "VisionZip K=24"


def test_gpu_bench_times_anyres_views_with_every_layout(tmp_path):
    from zipvlm.bench import gpu
    from zipvlm.bundle.anyres import AnyresGeometry

    language = gpu.LanguageShape("tiny Qwen2", "qwen2", 48, 2, 4, 2, 96, 256)
    views = AnyresGeometry(224, 224, 112, 14, ((112, 224), (224, 112), (224, 224)))  # 2x2 crops + 1
    rows = gpu.run(
        [],
        (),
        repeats=1,
        device=torch.device("cpu"),
        dtype=torch.float32,
        anyres_pairs=[(TINY, language, views)],
        anyres_selections=(None, VisionZipConfig(20, 4)),
    )
    # every token: the base view's 64 + the 16x16 crop grid + 16 newlines; VisionZip: 5 x 24
    assert [row["image_tokens"] for row in rows] == [64 + 16 * 16 + 16, 5 * 24]
    assert rows[0]["pair"] == "tiny CLIP, 5 views of 224x224 -> tiny Qwen2"
    assert all(row[key] > 0 for row in rows for key, _, _ in gpu.GPU_COLUMNS if key.endswith(("ms", "ratio")))


def test_anyres_bench_times_every_selection_of_a_bundle(anyres_folders, anyres_bundles, tmp_path):
    import shutil
    from dataclasses import asdict

    from conftest import ANYRES_SPECS, CAMERA

    from zipvlm.bench.anyres import AnyresCase, bench_case
    from zipvlm.bench.language import BenchPlan

    spec = ANYRES_SPECS["llava-next"]
    cache = tmp_path / "cache"  # as prepare() leaves it, from the session's folder and bundle
    shutil.copytree(anyres_folders["llava-next"], cache / "tiny" / "llava")
    shutil.copytree(anyres_bundles["llava-next"], cache / "tiny" / "bundle-none")
    (cache / "tiny" / "spec.json").write_text(json.dumps(asdict(spec)))
    shutil.copy(anyres_bundles["llava-next"] / "vision.onnx", cache / "tiny" / "vision-320.onnx")  # (54, 10)
    case = AnyresCase("tiny NeXT", spec, CAMERA, (None, VisionZipConfig(54, 10)), {320: 4.5})
    plan = BenchPlan({}, ("none",), (), repeats=1, new_tokens=3, threads=1)
    rows = bench_case("tiny", case, plan, cache)
    assert [row["image_tokens"] for row in rows] == [2340, 320]  # transformers' count, then 5 x 64
    assert [row["paper_prefill_speedup"] for row in rows] == ["-", "4.5x"]
    assert rows[0]["prefill_speedup"] == rows[0]["ttft_speedup"] == 1.0
    assert all(
        row[key] > 0
        for row in rows
        for key, _, fmt in ANYRES_COLUMNS
        if fmt != "{}" and key not in ("image_tokens", "prompt_tokens")
    )
    assert markdown_table(rows, ANYRES_COLUMNS).count("\n") == 3


def test_gpu_bench_without_a_gpu_is_one_line(capsys):
    from zipvlm.bench import gpu

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible here")
    assert gpu.main(["--repeats", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "PyTorch sees no CUDA GPU here" in err


def test_qwen_bench_times_every_setting_on_tiny_shapes(tmp_path):
    from zipvlm.bench.qwen import QwenPlan, Setting, run
    from zipvlm.models.tiny_qwen import TinyQwenSpec

    settings = (Setting((112, 112), None), Setting((112, 112), VisionZipConfig(6, 2)))
    plan = QwenPlan(TinyQwenSpec(), settings, quant="int4", repeats=1, new_tokens=3, threads=1)
    rows = run(plan, tmp_path / "cache")
    assert [(row["camera"], row["image_tokens"]) for row in rows] == [("112x112", 16), ("112x112", 8)]
    assert rows[0]["prompt_tokens"] - rows[0]["image_tokens"] == rows[1]["prompt_tokens"] - 8  # same text
    assert rows[0]["prefill_ratio"] == rows[0]["ttft_ratio"] == 1.0
    assert all(row[key] > 0 for row in rows for key, _, _ in QWEN_COLUMNS if key != "camera")
    assert markdown_table(rows, QWEN_COLUMNS).count("\n") == 3
    linked = [
        tmp_path / "cache" / f"bundle-int4-112x112-{name}" / "decoder.onnx" for name in ("all", "D6+C2")
    ]
    assert linked[0].stat().st_ino == linked[1].stat().st_ino  # one decoder, linked
