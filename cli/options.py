"""Flags and helpers shared by several commands: the bundle, where it runs, sources, signals."""

from __future__ import annotations

import argparse
import signal
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from zipvlm.bundle.errors import ArgumentError
from zipvlm.runtime.backends import BACKENDS, VISION_GRAPHS
from zipvlm.runtime.providers import PROVIDERS

if TYPE_CHECKING:
    from zipvlm.runtime.grabber import FrameGrabber
    from zipvlm.runtime.pipeline import BundlePipeline


def add_bundle(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, required=True, help="bundle written by zipvlm export")


def add_bundle_and_image(parser: argparse.ArgumentParser) -> None:
    add_bundle(parser)
    parser.add_argument("--image", type=Path, required=True, help="image file (JPEG, PNG, ...)")
    add_provider(parser)


def add_provider(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--provider",
        choices=PROVIDERS,
        default="cpu",
        help="where to run: cpu; cuda (vision on onnxruntime CUDA, decoder on genai "
        "CUDA); tensorrt (vision on onnxruntime's TensorRT provider, decoder on "
        "genai CUDA). Default cpu",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="ort",
        help="the vision graph on onnxruntime (ort, default; on --provider) or on the "
        "TensorRT plan built on this device by zipvlm engine (trt)",
    )
    parser.add_argument(
        "--target",
        help="with --backend trt: whose plan, engines/vision.TARGET.plan (default: the only plan there)",
    )
    parser.add_argument(
        "--vision-graph",
        choices=VISION_GRAPHS,
        default="float",
        help="with --backend ort: vision.onnx (float, default) or the INT8 Q/DQ "
        "vision.int8.onnx of zipvlm calib quantize (faster on a CPU with VNNI; "
        "its report says how many kept tokens change)",
    )


def add_source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--loop", action="store_true", help="play a video file or folder in a loop")
    parser.add_argument(
        "--fps",
        type=float,
        default=30.0,
        help="pace of an image folder or 'synthetic' (default 30; files use their own)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=5,
        metavar="N",
        help="reopen a lost source up to N times in a row, waiting 0.5 s doubling "
        "to 8 s (default 5), then give up",
    )


def open_grabber(args: argparse.Namespace) -> FrameGrabber:
    """The capture thread for --source with --loop, --fps and --retries."""
    from zipvlm.runtime.grabber import FrameGrabber, RetryPolicy
    from zipvlm.runtime.sources import open_reader, parse_source

    if args.retries < 0:
        raise ArgumentError(f"--retries must not be negative, got {args.retries}")
    spec = parse_source(args.source, args.loop, args.fps)
    return FrameGrabber(open_reader(spec), RetryPolicy(max_attempts=args.retries))


def open_pipeline(args: argparse.Namespace) -> BundlePipeline:
    """The bundle loaded as the answering commands' shared flags say (lazily: torch-free import)."""
    from zipvlm.runtime.pipeline import BundlePipeline

    return BundlePipeline.open(
        args.bundle,
        provider=args.provider,
        backend=args.backend,
        target=args.target,
        vision_graph=args.vision_graph,
    )


def listen_address(value: str) -> tuple[str, int]:
    """HOST:PORT for --serve, checked free before anything loads."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ArgumentError(f"--serve takes HOST:PORT, e.g. 127.0.0.1:8080; got {value!r}")
    check_listen(host, int(port))
    return host, int(port)


def check_listen(host: str, port: int) -> None:
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise ArgumentError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def stop_on_signals() -> threading.Event:
    """SIGINT/SIGTERM set the event (the current answer finishes); a second SIGINT interrupts."""
    stop = threading.Event()

    def request_stop(signum, _frame) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    return stop
