"""`zipvlm stream`: the same question about a live source, frame after frame (optionally served)."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Callable

from zipvlm.bundle.errors import ZipvlmError
from zipvlm.cli.options import (
    add_bundle,
    add_provider,
    add_source_options,
    listen_address,
    open_grabber,
    open_pipeline,
    stop_on_signals,
)


def register(commands) -> None:
    stream = commands.add_parser(
        "stream",
        help="ask the same question about a live source, frame after frame",
        description="Ask a question about the newest frame of a camera, video file, URL, "
        "GStreamer pipeline, image folder or 'synthetic' pattern, one answer at a "
        "time. Capture keeps only the newest frame; frames that arrive while an "
        "answer is generated are dropped and counted. A lost source is reopened "
        "with backoff. Ctrl-C stops cleanly.",
    )
    add_bundle(stream)
    stream.add_argument(
        "--source",
        required=True,
        metavar="SRC",
        help="camera index (0), video file, image folder, rtsp:// or http:// URL, "
        "GStreamer pipeline (with '!'), or 'synthetic'",
    )
    stream.add_argument("--prompt", required=True, help="the question asked about every frame")
    stream.add_argument(
        "--system",
        metavar="TEXT",
        help="a system prompt (instructions, the robot's role); with the prompt's "
        "other text before the first image, its KV cache is computed once and "
        "reused for every frame",
    )
    stream.add_argument(
        "--every",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="at most one question per SECONDS (default 0: back to back)",
    )
    stream.add_argument("--max-frames", type=int, metavar="N", help="stop after N answers")
    stream.add_argument(
        "--window",
        type=int,
        default=1,
        metavar="N",
        help="video mode: ask about the last N sampled frames together (N x K "
        "image tokens; each frame runs through the vision graph once)",
    )
    stream.add_argument(
        "--max-new-tokens",
        type=int,
        default=64,
        metavar="N",
        help="stop each answer after N tokens (default 64)",
    )
    add_source_options(stream)
    stream.add_argument(
        "--serve",
        metavar="HOST:PORT",
        help="also serve the live page (preview with the kept patches, the prompt, "
        "answers) and the OpenAI API on HOST:PORT, e.g. 127.0.0.1:8080",
    )
    stream.add_argument(
        "--json",
        action="store_true",
        help="one JSON line per answer: text, frame_index, frame_time, frame_age_ms, "
        "num_image_tokens, timings_ms, dropped_frames (and error, if any)",
    )
    add_provider(stream)
    stream.set_defaults(handler=run_stream)


def run_stream(args: argparse.Namespace) -> int:
    from zipvlm.runtime.generation import GenerationOptions
    from zipvlm.runtime.stream import StreamOptions, stream_answers

    options = StreamOptions(
        args.prompt,
        args.every,
        args.max_frames,
        GenerationOptions(args.max_new_tokens),
        args.window,
        args.system,
    )
    options.validate()
    address = listen_address(args.serve) if args.serve else None
    grabber = open_grabber(args)  # a bad source fails here, before the bundle loads
    pipeline = open_pipeline(args)
    stop = stop_on_signals()

    def show(answer) -> None:
        print(json.dumps(answer.to_json()) if args.json else answer.line(), flush=True)

    if address is None:
        with grabber:
            for answer in stream_answers(pipeline, grabber, options, stop):
                show(answer)
    else:
        _stream_and_serve(pipeline, grabber, options, address, stop, show)
    if grabber.error:
        raise ZipvlmError(grabber.error)
    stats = grabber.stats
    print(
        f"[{stats.frames} frames captured, {stats.dropped} dropped, {stats.bad_frames} bad, "
        f"{stats.reconnects} reconnects]",
        file=sys.stderr,
    )
    return 0


def _stream_and_serve(
    pipeline, grabber, options, address: tuple[str, int], stop: threading.Event, show: Callable
) -> None:
    """`stream --serve`: the stream runs as the live page's feed, the server in a thread."""
    from zipvlm.serve.app import create_app, serving_in_background
    from zipvlm.serve.live import LiveFeed

    model_lock = threading.Lock()
    live = LiveFeed(pipeline, grabber, options, model_lock, on_answer=show)
    app = create_app(pipeline, pipeline.bundle.name, model_lock=model_lock, live=live)
    host, port = address
    with serving_in_background(app, host, port):
        print(
            f"live page at http://{host}:{port}/ (OpenAI API at /v1/chat/completions); Ctrl-C stops",
            file=sys.stderr,
        )
        live.start()
        try:
            live.wait(stop)
        finally:
            live.stop()
