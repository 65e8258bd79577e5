"""Every command on the any-res bundles (LLaVA-NeXT, LLaVA-OneVision; 640x480 camera, 5 views):
run, chat, stream with the prefix cache, serve (API and the live page's overlay per view), calib
quantize, and engine's static checks."""

from __future__ import annotations

import base64
import json
import shutil
import sys
import threading
import time

import cv2
import numpy as np
import onnx
import pytest
from images import photo
from openai import OpenAI
from servers import running

from zipvlm.bundle.format import INT8_GRAPH, Bundle
from zipvlm.bundle.graph_checks import check_qdq_placement
from zipvlm.calib.collect import CollectOptions, collect
from zipvlm.calib.quantize import quantize_bundle
from zipvlm.calib.selection import float_nodes
from zipvlm.cli.main import main
from zipvlm.runtime import preprocess_anyres
from zipvlm.runtime.conversation import Session
from zipvlm.runtime.generation import GenerationOptions
from zipvlm.runtime.grabber import FrameGrabber
from zipvlm.runtime.pipeline import BundlePipeline
from zipvlm.runtime.regions import kept_boxes
from zipvlm.runtime.sources import open_reader, parse_source
from zipvlm.runtime.stream import FrameWindow, StreamOptions
from zipvlm.serve.app import create_app
from zipvlm.serve.live import LiveFeed

pytestmark = pytest.mark.slow  # runs the any-res bundles

QUESTION = "What is in front of the robot?"
OPTIONS = GenerationOptions(max_new_tokens=8)


@pytest.fixture(scope="module")
def pipelines(anyres_bundles):
    return {name: BundlePipeline.open(bundle) for name, bundle in anyres_bundles.items()}


def test_run_answers_and_warns_once_about_a_frame_of_another_grid(anyres_bundles, tmp_path, capsys):
    preprocess_anyres._warned.clear()
    image = tmp_path / "wide.png"
    cv2.imwrite(str(image), photo(720, 1280, seed=1))  # 9 views on OneVision; the bundle takes 5
    argv = ["run", "--bundle", str(anyres_bundles["llava-onevision"]), "--image", str(image)]
    assert main([*argv, "--prompt", QUESTION, "--max-new-tokens", "4", "--json"]) == 0
    captured = capsys.readouterr()
    answer = json.loads(captured.out)
    assert answer["num_image_tokens"] == 320 and len(answer["token_ids"]) == 4
    warnings = [line for line in captured.err.splitlines() if "resizing them to 640x480" in line]
    assert len(warnings) == 1 and "frames of 1280x720" in warnings[0]


def test_chat_follow_up_reuses_the_image(pipelines):
    session = Session(pipelines["llava-next"], photo(480, 640, seed=2), OPTIONS)
    first = session.ask(QUESTION)
    second = session.ask("And on the left?")
    assert first.num_image_tokens == 320 and len(second.token_ids) > 0
    assert second.timings_ms["vision"] == 0.0  # the views are not encoded again


@pytest.mark.parametrize("name", ["llava-next", "llava-onevision"])
def test_stream_answers_from_the_prefix_cache_equal_genai_frame_after_frame(pipelines, name):
    pipeline = pipelines[name]
    window = FrameWindow(pipeline, size=1)
    for seed in range(2):
        image = photo(480, 640, seed=10 + seed)
        seen = window.add(image)
        assert seen.keep_indices.shape == (1, 5, 54)
        answer = window.ask(QUESTION, OPTIONS)
        ids = window.prompt_ids(QUESTION)
        assert answer.token_ids == Session(pipeline, image, OPTIONS).ask_ids(ids).token_ids
        assert (answer.cached_tokens > 0) == (seed == 1)  # the text before the image, from frame 2 on


def test_kept_patches_are_drawn_per_view_on_the_camera_frame(pipelines):
    pipeline = pipelines["llava-next"]
    keep = pipeline.embed_image(photo(480, 640, seed=3)).keep_indices[0]  # (5, 54): CLS + 53 per view
    boxes = kept_boxes(keep, pipeline.bundle, 480, 640)
    base = kept_boxes(keep[:1], pipeline.bundle, 480, 640)
    assert len(base) == 53 and 53 < len(boxes) <= 5 * 53  # crop patches on the black bars cover nothing
    assert all(0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480 for x0, y0, x1, y1 in boxes)
    half = kept_boxes(keep, pipeline.bundle, 240, 320)  # a smaller frame of the same grid: scaled
    assert len(half) == len(boxes) and all(x1 <= 320 and y1 <= 240 for _, _, x1, y1 in half)


def test_serve_answers_the_api_and_the_live_page_draws_every_view(pipelines):
    pipeline = pipelines["llava-next"]
    lock = threading.Lock()
    live = LiveFeed(
        pipeline,
        FrameGrabber(open_reader(parse_source("synthetic", fps=15))),
        StreamOptions("What moves?", generation=GenerationOptions(max_new_tokens=4)),
        lock,
    )
    live.start()
    try:
        with running(create_app(pipeline, "next", model_lock=lock, live=live)) as url:
            image = (
                "data:image/png;base64," + base64.b64encode(cv2.imencode(".png", photo(480, 640))[1]).decode()
            )
            client = OpenAI(base_url=f"{url}/v1", api_key="not-needed")
            content = [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": QUESTION}]
            response = client.chat.completions.create(
                model="next", messages=[{"role": "user", "content": content}], max_tokens=4
            )
            assert response.usage.model_extra["visual_tokens"] == 320
            deadline = time.monotonic() + 60
            while not live.answers and time.monotonic() < deadline:
                time.sleep(0.2)
            assert live.answers and live.answers[-1]["num_image_tokens"] == 320
            drawn = cv2.imdecode(np.frombuffer(live.frame_jpeg(), np.uint8), cv2.IMREAD_COLOR)
            assert drawn.shape == (480, 640, 3)
    finally:
        live.stop()


def test_calib_quantizes_the_views_and_keeps_the_layout_float(anyres_bundles, tmp_path):
    bundle = shutil.copytree(anyres_bundles["llava-next"], tmp_path / "bundle")
    shots = tmp_path / "shots"
    shots.mkdir()
    for i in range(6):
        cv2.imwrite(str(shots / f"shot_{i}.png"), photo(480, 640, seed=20 + i))
    collect(CollectOptions(str(shots), 6, tmp_path / "frames"))
    report = quantize_bundle(bundle, tmp_path / "frames")
    assert 0 < report.keep_iou.mean <= 1 and -1 <= report.cosine.min <= 1
    assert Bundle.open(bundle).has(INT8_GRAPH)
    check_qdq_placement(onnx.load(str(bundle / INT8_GRAPH), load_external_data=False))
    model = onnx.load(str(bundle / "vision.onnx"), load_external_data=False)
    kept = set(float_nodes(model))
    layout = [
        n.name for n in model.graph.node if n.op_type in ("CumSum", "ScatterElements", "GatherElements")
    ]
    assert layout and set(layout) <= kept


def test_engine_static_checks_read_the_views_input(anyres_bundles, tmp_path, monkeypatch, capsys):
    bundle = shutil.copytree(anyres_bundles["llava-onevision"], tmp_path / "bundle")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert main(["engine", "--bundle", str(bundle), "--target", "x86", "--max-batch", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "TensorRT is not installed here" in err and "static checks passed" in err
    text = (bundle / "engines" / "vision.x86.report.txt").read_text()
    assert "inputs:  pixel_values ['batch', 5, 3, 384, 384]" in text
    assert "outputs: image_embeds ['batch', 320, 64], keep_indices ['batch', 5, 54]" in text
    assert "max [2, 5, 3, 384, 384]" in text
