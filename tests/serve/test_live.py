"""`zipvlm serve --source`: the live page, its MJPEG preview, answers and prompt, and the overlay."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time

import cv2
import httpx
import numpy as np
import pytest
from servers import running

from zipvlm.runtime.generation import GenerationOptions
from zipvlm.runtime.grabber import FrameGrabber
from zipvlm.runtime.pipeline import BundlePipeline
from zipvlm.runtime.sources import open_reader, parse_source
from zipvlm.runtime.stream import StreamOptions
from zipvlm.serve.app import create_app
from zipvlm.serve.live import LiveFeed
from zipvlm.serve.overlay import draw_kept


def test_draw_kept_tints_only_the_kept_patches():
    frame = np.full((480, 640, 3), 100, np.uint8)
    drawn = draw_kept(frame, [(80, 0, 100, 20)])
    assert (drawn[5:15, 85:95] != 100).any() and (drawn[200:300, 200:300] == 100).all()


@pytest.fixture(scope="module")
def live_url(tiny_bundles):
    pipeline = BundlePipeline.open(tiny_bundles["clip-llama"])
    lock = threading.Lock()
    live = LiveFeed(
        pipeline,
        FrameGrabber(open_reader(parse_source("synthetic", fps=15))),
        StreamOptions("What moves?", generation=GenerationOptions(max_new_tokens=32)),
        lock,
    )
    live.start()
    with running(create_app(pipeline, "tiny", model_lock=lock, live=live)) as base:
        yield base
    live.stop()


def first_event(url: str) -> dict:
    with httpx.stream("GET", f"{url}/live/events", timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                return json.loads(line[6:])
    raise AssertionError("no event")


def test_the_mjpeg_preview_gives_frames_of_the_source(live_url):
    jpegs, buffer = [], b""
    with httpx.stream("GET", f"{live_url}/live/stream.mjpg", timeout=30) as response:
        assert response.headers["content-type"].startswith("multipart/x-mixed-replace")
        for chunk in response.iter_bytes():
            buffer += chunk
            while (start := buffer.find(b"\xff\xd8")) >= 0 and (end := buffer.find(b"\xff\xd9", start)) >= 0:
                jpegs.append(buffer[start : end + 2])
                buffer = buffer[end + 2 :]
            if len(jpegs) >= 2:
                break
    frames = [cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) for jpeg in jpegs]
    assert all(frame.shape == (480, 640, 3) for frame in frames)


def test_answers_stream_and_a_new_prompt_takes_effect(live_url):
    answer = first_event(live_url)
    assert answer["num_image_tokens"] == 64 and answer["prompt"] == "What moves?"
    assert answer["timings_ms"]["first_token"] >= answer["timings_ms"]["vision"]
    reply = httpx.post(f"{live_url}/live/prompt", json={"prompt": "Is it red?"})
    assert reply.json() == {"prompt": "Is it red?"}
    deadline = time.monotonic() + 30
    while first_event(live_url)["prompt"] != "Is it red?":
        assert time.monotonic() < deadline
    empty = httpx.post(f"{live_url}/live/prompt", json={"prompt": "  "})
    assert empty.status_code == 400 and empty.json()["error"]["message"] == "the prompt is empty"


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)
def test_the_page_loads_shows_frames_and_an_answer_appears_in_chromium(live_url, tmp_path):
    deadline = time.monotonic() + 30
    while not httpx.get(f"{live_url}/live/state").json()["answers"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    browser = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--timeout=8000",
        "--window-size=1280,800",
    ]
    dom = subprocess.run(
        [*browser, "--dump-dom", f"{live_url}/"], capture_output=True, text=True, timeout=60
    ).stdout
    assert 'data-answers="0"' not in dom and 'data-answers="' in dom  # the page shows answers
    assert '<ol id="answers"><li>' in dom and "frame " in dom and "first token" in dom
    screenshot = tmp_path / "live.png"
    subprocess.run([*browser, f"--screenshot={screenshot}", f"{live_url}/"], capture_output=True, timeout=60)
    page = cv2.imread(str(screenshot))
    preview = page[115:590, 25:665]  # where the 640x480 preview sits on the page
    assert len(np.unique(preview.reshape(-1, 3), axis=0)) > 50  # frames, not an empty box
