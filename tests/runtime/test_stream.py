"""`zipvlm stream`: real video files through OpenCV, lost sources, bad frames, a failing frame."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time

import cv2
import httpx
import numpy as np
import pytest
from images import photo

from zipvlm.bundle.format import Bundle
from zipvlm.cli.main import main
from zipvlm.runtime.generation import GenerationOptions
from zipvlm.runtime.grabber import FrameGrabber, RetryPolicy
from zipvlm.runtime.pipeline import BundlePipeline
from zipvlm.runtime.sources import END, OpenCVReader, Pacer, parse_source
from zipvlm.runtime.stream import StreamOptions, stream_answers

FPS = 30
QUICK_RETRY = RetryPolicy(first_delay_s=0.05, max_delay_s=0.2, max_attempts=100)


def write_video(path, frames: int, fps: int = FPS):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (320, 240))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(photo(240, 320, seed=i % 5))
    writer.release()
    return path


@pytest.fixture(scope="module")
def bundle(tiny_bundles):
    return tiny_bundles["clip-llama"]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "drive.avi", frames=60)


def stream_json(capsys, *args) -> tuple[list[dict], str]:
    assert main(["stream", *args, "--json"]) == 0
    captured = capsys.readouterr()
    return [json.loads(line) for line in captured.out.splitlines()], captured.err


def test_a_video_file_streams_to_its_end_with_consistent_ages_and_drops(bundle, video, capsys):
    answers, err = stream_json(
        capsys,
        "--bundle",
        str(bundle),
        "--source",
        str(video),
        "--prompt",
        "What is ahead?",
        "--max-new-tokens",
        "4",
    )
    assert answers and set(answers[0]) == {
        "text",
        "frame_index",
        "frame_time",
        "frame_age_ms",
        "num_image_tokens",
        "timings_ms",
        "dropped_frames",
        "cached_prompt_tokens",
    }
    for answer in answers:
        assert answer["num_image_tokens"] == 64
        assert answer["frame_age_ms"] >= answer["timings_ms"]["first_token"]  # answered after capture
    # "USER: " before the image is prefilled with the first frame, then taken from its cache
    assert [a["cached_prompt_tokens"] > 0 for a in answers[:2]] == [False, True]
    first, last = answers[0], answers[-1]
    assert last["frame_index"] > first["frame_index"]
    played = last["frame_time"] - first["frame_time"]
    assert played >= 0.7 * (last["frame_index"] - first["frame_index"]) / FPS  # at the file's pace
    for i, answer in enumerate(answers):  # every frame before the i-th taken one was dropped
        assert answer["dropped_frames"] >= answer["frame_index"] - i
    captured, dropped = (int(n) for n in re.search(r"\[(\d+) frames captured, (\d+) dropped", err).groups())
    assert captured == 60  # every frame of the file was read, none skipped as bad
    assert dropped >= captured - len(answers) - 1  # at most the last frame was neither taken nor dropped


def test_every_paces_questions(bundle, video, capsys):
    answers, _ = stream_json(
        capsys,
        "--bundle",
        str(bundle),
        "--source",
        str(video),
        "--prompt",
        "What is ahead?",
        "--max-new-tokens",
        "2",
        "--every",
        "0.5",
    )
    gaps = np.diff([answer["frame_time"] for answer in answers])
    # A 2 s file of 60 frames, one question per 0.5 s: on a loaded machine the paced playback runs
    # late, so more questions fit, but never one per frame and never two within --every.
    assert 2 <= len(answers) <= 12 and (gaps > 0.4).all()


def test_max_frames_stops_after_that_many_answers(bundle, capsys):
    answers, _ = stream_json(
        capsys,
        "--bundle",
        str(bundle),
        "--source",
        "synthetic",
        "--prompt",
        "What moves?",
        "--max-new-tokens",
        "2",
        "--max-frames",
        "3",
    )
    assert len(answers) == 3


def test_a_lost_file_is_reopened_when_it_comes_back(tmp_path):
    path = write_video(tmp_path / "cam.avi", frames=6)
    with FrameGrabber(OpenCVReader(parse_source(str(path), loop=True)), QUICK_RETRY) as grabber:
        assert grabber.take(timeout=5) is not None
        path.rename(tmp_path / "away.avi")
        time.sleep(0.6)  # the loop reaches the end and finds the file gone
        frames_while_gone = grabber.stats.frames
        time.sleep(0.3)
        assert grabber.stats.frames == frames_while_gone and not grabber.finished
        (tmp_path / "away.avi").rename(path)
        deadline = time.monotonic() + 5
        while grabber.stats.reconnects == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert grabber.stats.reconnects >= 1
        assert grabber.take(timeout=5).index >= frames_while_gone  # the stale pre-loss frame was dropped
    assert grabber.error is None


def test_a_source_that_never_comes_back_ends_with_the_reason(tmp_path):
    path = write_video(tmp_path / "cam.avi", frames=3)
    retry = RetryPolicy(first_delay_s=0.05, max_delay_s=0.1, max_attempts=3)
    with FrameGrabber(OpenCVReader(parse_source(str(path), loop=True)), retry) as grabber:
        grabber.take(timeout=5)
        path.unlink()
        deadline = time.monotonic() + 5
        while not grabber.finished and time.monotonic() < deadline:
            time.sleep(0.05)
    assert grabber.finished
    assert grabber.error == f"video file {path} is missing; gave up after 3 retries"


def test_a_camera_that_does_not_open_is_one_line_and_exit_2(bundle, capsys):
    code = main(["stream", "--bundle", str(bundle), "--source", "63", "--prompt", "Hi?", "--retries", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == "zipvlm stream: error: cannot open camera 63; gave up after 1 retries"


class ListReader:
    """Frames from a list, as a driver might hand them over (at `fps`), then the end."""

    def __init__(self, frames, fps: float = 1000.0):
        self.frames = list(frames)
        self.pacer = Pacer(fps)

    def open(self):
        pass

    def read(self):
        self.pacer.wait()
        return self.frames.pop(0) if self.frames else END

    def close(self):
        pass


def test_corrupt_frames_are_skipped_and_counted():
    good = photo(48, 64)
    frames = [
        good,
        np.empty((0, 0, 3), np.uint8),
        good[:, :, :2],
        good.astype(np.float32),
        "not an array",
        good[:, :, 0],
    ]
    with FrameGrabber(ListReader(frames)) as grabber:
        while not grabber.finished:
            time.sleep(0.01)
    assert (grabber.stats.frames, grabber.stats.bad_frames) == (2, 4)
    assert grabber.error is None


class FailsOnSecondFrame(BundlePipeline):
    """A real pipeline whose vision backend fails once, as a device error would."""

    calls = 0

    def embed_image(self, image):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return super().embed_image(image)


def test_a_backend_error_is_reported_on_its_answer_and_the_next_frame_is_served(bundle):
    pipeline = FailsOnSecondFrame(Bundle.open(bundle))
    options = StreamOptions("What moves?", max_frames=3, generation=GenerationOptions(2))
    with FrameGrabber(ListReader([photo(48, 64, seed=i) for i in range(100)], fps=50)) as grabber:
        answers = list(stream_answers(pipeline, grabber, options, threading.Event()))
    assert [answer.error is None for answer in answers] == [True, False, True]
    assert "illegal memory access" in answers[1].error and answers[1].text == ""
    assert answers[2].timings_ms["first_token"] > 0


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("nowhere.mp4", "--source nowhere.mp4: not a camera index"),
        ("synthetic:x", "--source synthetic:x: the synthetic scene's seed must be a number"),
        ("synthetic:", "the synthetic scene's seed must be a number"),
        ("videotestsrc ! appsink", "--source is a GStreamer pipeline, but this OpenCV was built without"),
    ],
)
def test_bad_sources_are_one_line(bundle, capsys, source, message):
    if "!" in source and "GStreamer:                   YES" in cv2.getBuildInformation():
        pytest.skip("this OpenCV has GStreamer")
    code = main(["stream", "--bundle", str(bundle), "--source", source, "--prompt", "Hi?"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and message in err


def test_an_image_folder_streams_and_counts_unreadable_files(bundle, tmp_path, capsys):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), photo(120, 160, seed=i))
    (tmp_path / "3.png").write_text("not a png")
    shutil.copy(tmp_path / "0.png", tmp_path / "4.png")
    answers, err = stream_json(
        capsys,
        "--bundle",
        str(bundle),
        "--source",
        str(tmp_path),
        "--prompt",
        "Hi?",
        "--max-new-tokens",
        "2",
        "--fps",
        "5",
    )
    assert 1 <= len(answers) <= 4
    assert "4 frames captured" in err and "1 bad" in err


def test_stream_serve_prints_answers_and_serves_the_live_page(bundle, video, capsys):
    from servers import free_port

    port = free_port()
    seen: list[dict] = []

    def watch() -> None:  # polls the page's state while the stream runs in this process
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not seen:
            try:
                state = httpx.get(f"http://127.0.0.1:{port}/live/state", timeout=2).json()
            except httpx.HTTPError:
                time.sleep(0.05)
                continue
            seen.extend(state["answers"])

    watcher = threading.Thread(target=watch)
    watcher.start()
    answers, err = stream_json(
        capsys,
        "--bundle",
        str(bundle),
        "--source",
        str(video),
        "--prompt",
        "What is ahead?",
        "--max-new-tokens",
        "2",
        "--every",
        "0.4",
        "--max-frames",
        "4",
        "--serve",
        f"127.0.0.1:{port}",
    )
    watcher.join()
    assert len(answers) == 4 and f"live page at http://127.0.0.1:{port}/" in err
    assert seen and seen[0]["prompt"] == "What is ahead?"
    assert seen[0]["frame_index"] in [a["frame_index"] for a in answers]  # the page shows these answers
    with pytest.raises(httpx.ConnectError):  # and the server is gone when the stream ends
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


@pytest.mark.parametrize("value", ["8080", "127.0.0.1:", "127.0.0.1:99999", ":80x"])
def test_a_bad_serve_address_is_one_line(bundle, capsys, value):
    code = main(
        ["stream", "--bundle", str(bundle), "--source", "synthetic", "--prompt", "Hi?", "--serve", value]
    )
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        f"zipvlm stream: error: --serve takes HOST:PORT, e.g. 127.0.0.1:8080; got {value!r}"
    )
