"""The `zipvlm` command line.

User errors (`ZipvlmError`) are caught here, once, and printed as one line with
exit code 2. Commands that need PyTorch (export, demo) import it lazily, so the
runtime commands start without it.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from zipvlm.calib.cli import add_calib_command
from zipvlm.runtime.backends import BACKENDS, VISION_GRAPHS
from zipvlm.runtime.backends.cli import add_engine_command
from zipvlm.runtime.errors import ArgumentError, ZipvlmError
from zipvlm.runtime.providers import PROVIDERS

if TYPE_CHECKING:
    from zipvlm.runtime.answer import BundlePipeline

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
LIVE_MAX_NEW_TOKENS = 32  # the live page's answers under `serve --source`: short, so they keep up


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the command and pointing at --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message}{_suggestion(message)} "
                                   f"(see {self.prog} --help)\n")


def _suggestion(message: str) -> str:
    """'; did you mean 'export'?' for an invalid choice close to a valid one."""
    found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if not found:
        return ""
    choices = re.findall(r"'([^']*)'", found.group(2))
    close = difflib.get_close_matches(found.group(1), choices, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="zipvlm",
        description="Edge runtime for vision-language models with VisionZip token compression.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    export = commands.add_parser(
        "export",
        help="export a local LLaVA folder to a bundle (vision.onnx with VisionZip inside)",
        description=(
            "Export a local Hugging Face LLaVA folder (CLIP or SigLIP tower) to a bundle: "
            "vision.onnx = encoder up to the feature layer + VisionZip + projector, "
            "checked for TensorRT-safe ops and verified against PyTorch."
        ),
    )
    export.add_argument("--model", type=Path, required=True, help="local Hugging Face LLaVA folder")
    export.add_argument("--dominant", type=int, metavar="D",
                        help="tokens kept by attention, CLS included on CLIP (default 54)")
    export.add_argument("--contextual", type=int, metavar="C",
                        help="tokens merged from the rest (default 10; K = D + C visual tokens)")
    export.add_argument("--no-zip", action="store_true",
                        help="full-token baseline: every token, as the model itself selects them")
    export.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    export.add_argument("--quant", choices=["none", "int8", "int4"], default="int8",
                        help="decoder weights: int8 (default; dynamic, per channel: the fastest "
                             "time to first token and answer on CPU in make bench), int4 "
                             "(MatMulNBits, block 32: decodes as fast, prefills slower) or none "
                             "(float32)")
    export.add_argument("--fp16", action="store_true",
                        help="also write vision.fp16.onnx (float32 inputs/outputs)")
    export.set_defaults(handler=_cmd_export)

    run = commands.add_parser(
        "run",
        help="answer a question about one image",
        description="Answer a question about one image with a bundle (no PyTorch). The answer "
                    "streams to the terminal; --json prints one object with timings instead.",
    )
    _add_bundle_and_image(run)
    prompt = run.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="the question; the model's chat template is applied")
    prompt.add_argument("--raw-prompt",
                        help="text given verbatim to the tokenizer, holding the image token once")
    run.add_argument("--max-new-tokens", type=int, default=128, metavar="N",
                     help="stop after N generated tokens (default 128)")
    run.add_argument("--temperature", type=float, default=0.0,
                     help="0 (default) decodes greedily; above 0 samples")
    run.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1)")
    run.add_argument("--seed", type=int, help="seed for sampling")
    run.add_argument("--json", action="store_true",
                     help="print one JSON object: text, token_ids, num_image_tokens, timings_ms")
    run.set_defaults(handler=_cmd_run)

    chat = commands.add_parser(
        "chat",
        help="a conversation about one image, one question per line of stdin",
        description="Ask questions about one image, one per line of standard input (a terminal "
                    "or a pipe); follow-ups reuse the KV cache of the image and earlier turns. "
                    "An empty line is skipped; end of input or 'exit' ends the chat.",
    )
    _add_bundle_and_image(chat)
    chat.add_argument("--max-new-tokens", type=int, default=128, metavar="N",
                      help="stop each answer after N tokens (default 128)")
    chat.set_defaults(handler=_cmd_chat)

    stream = commands.add_parser(
        "stream",
        help="ask the same question about a live source, frame after frame",
        description="Ask a question about the newest frame of a camera, video file, URL, "
                    "GStreamer pipeline, image folder or 'synthetic' pattern, one answer at a "
                    "time. Capture keeps only the newest frame; frames that arrive while an "
                    "answer is generated are dropped and counted. A lost source is reopened "
                    "with backoff. Ctrl-C stops cleanly.",
    )
    _add_bundle(stream)
    stream.add_argument("--source", required=True, metavar="SRC",
                        help="camera index (0), video file, image folder, rtsp:// or http:// URL, "
                             "GStreamer pipeline (with '!'), or 'synthetic'")
    stream.add_argument("--prompt", required=True, help="the question asked about every frame")
    stream.add_argument("--system", metavar="TEXT",
                        help="a system prompt (instructions, the robot's role); with the prompt's "
                             "other text before the first image, its KV cache is computed once and "
                             "reused for every frame")
    stream.add_argument("--every", type=float, default=0.0, metavar="SECONDS",
                        help="at most one question per SECONDS (default 0: back to back)")
    stream.add_argument("--max-frames", type=int, metavar="N", help="stop after N answers")
    stream.add_argument("--window", type=int, default=1, metavar="N",
                        help="video mode: ask about the last N sampled frames together (N x K "
                             "image tokens; each frame runs through the vision graph once)")
    stream.add_argument("--max-new-tokens", type=int, default=64, metavar="N",
                        help="stop each answer after N tokens (default 64)")
    _add_source_options(stream)
    stream.add_argument("--serve", metavar="HOST:PORT",
                        help="also serve the live page (preview with the kept patches, the prompt, "
                             "answers) and the OpenAI API on HOST:PORT, e.g. 127.0.0.1:8080")
    stream.add_argument("--json", action="store_true",
                        help="one JSON line per answer: text, frame_index, frame_time, frame_age_ms, "
                             "num_image_tokens, timings_ms, dropped_frames (and error, if any)")
    _add_provider(stream)
    stream.set_defaults(handler=_cmd_stream)

    serve = commands.add_parser(
        "serve",
        help="an OpenAI-compatible HTTP server over a bundle",
        description="Serve a bundle over HTTP: POST /v1/chat/completions (OpenAI-compatible; "
                    "images as data: URLs; stream: true as server-sent events), GET /v1/models, "
                    "GET /health, GET /metrics (Prometheus). One answer at a time; up to "
                    "--max-waiting requests queue, more get 429. With --source, also a live "
                    "page at /: the source's preview with the kept patches, the prompt, answers.",
    )
    _add_bundle(serve)
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.add_argument("--model-name", help="the model id clients send (default: the bundle's folder name)")
    serve.add_argument("--allow-remote-images", action="store_true",
                       help="fetch http(s) image URLs (refused by default)")
    serve.add_argument("--max-body-mb", type=float, default=20.0, help="request body cap (default 20)")
    serve.add_argument("--max-image-pixels", type=int, default=4096 * 4096,
                       help="decoded image cap, width x height (default 4096 x 4096)")
    serve.add_argument("--max-tokens", type=int, default=512, help="largest max_tokens allowed (default 512)")
    serve.add_argument("--timeout", type=float, default=120.0,
                       help="seconds a request may wait and run (default 120), then 503")
    serve.add_argument("--max-waiting", type=int, default=4,
                       help="requests queued behind the running one (default 4); more get 429")
    serve.add_argument("--source", metavar="SRC",
                       help="also stream SRC (as zipvlm stream takes it) and serve the live page at /")
    serve.add_argument("--prompt", default="What is in front of the camera?",
                       help="the live page's first question (editable on the page)")
    _add_source_options(serve)
    _add_provider(serve)
    serve.set_defaults(handler=_cmd_serve)

    add_engine_command(commands)
    add_calib_command(commands)

    demo = commands.add_parser(
        "demo",
        help="build a tiny random LLaVA, export it, and stream a synthetic camera to it",
        description="Build a tiny random-weight LLaVA (offline), export it with VisionZip, "
                    "verify it, then stream the synthetic source through it, printing answers "
                    "and latencies. The answers of a random model are noise.",
    )
    demo.add_argument("--workdir", type=Path, default=Path("artifacts"),
                      help="where the tiny model and its bundle go (default ./artifacts)")
    demo.add_argument("--seconds", type=float, default=10.0,
                      help="how long to stream (default 10)")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def _add_bundle(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, required=True, help="bundle written by zipvlm export")


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--loop", action="store_true", help="play a video file or folder in a loop")
    parser.add_argument("--fps", type=float, default=30.0,
                        help="pace of an image folder or 'synthetic' (default 30; files use their own)")
    parser.add_argument("--retries", type=int, default=5, metavar="N",
                        help="reopen a lost source up to N times in a row, waiting 0.5 s doubling "
                             "to 8 s (default 5), then give up")


def _grabber(args: argparse.Namespace):
    """The capture thread for --source with --loop, --fps and --retries."""
    from zipvlm.runtime.grabber import FrameGrabber, RetryPolicy
    from zipvlm.runtime.sources import open_reader, parse_source

    if args.retries < 0:
        raise ArgumentError(f"--retries must not be negative, got {args.retries}")
    spec = parse_source(args.source, args.loop, args.fps)
    return FrameGrabber(open_reader(spec), RetryPolicy(max_attempts=args.retries))


def _add_bundle_and_image(parser: argparse.ArgumentParser) -> None:
    _add_bundle(parser)
    parser.add_argument("--image", type=Path, required=True, help="image file (JPEG, PNG, ...)")
    _add_provider(parser)


def _add_provider(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--provider", choices=PROVIDERS, default="cpu",
                        help="where to run: cpu; cuda (vision on onnxruntime CUDA, decoder on genai "
                             "CUDA); tensorrt (vision on onnxruntime's TensorRT provider, decoder on "
                             "genai CUDA). Default cpu")
    parser.add_argument("--backend", choices=BACKENDS, default="ort",
                        help="the vision graph on onnxruntime (ort, default; on --provider) or on the "
                             "TensorRT plan built on this device by zipvlm engine (trt)")
    parser.add_argument("--target", help="with --backend trt: whose plan, engines/vision.TARGET.plan "
                                         "(default: the only plan there)")
    parser.add_argument("--vision-graph", choices=VISION_GRAPHS, default="float",
                        help="with --backend ort: vision.onnx (float, default) or the INT8 Q/DQ "
                             "vision.int8.onnx of zipvlm calib quantize (2.6-3.8x faster on a CPU with "
                             "VNNI, none without; its report says how many kept tokens change)")


def _open_pipeline(args: argparse.Namespace) -> BundlePipeline:
    """The bundle loaded as the answering commands' shared flags say (lazily: torch-free import)."""
    from zipvlm.runtime.answer import BundlePipeline

    return BundlePipeline(args.bundle, provider=args.provider, backend=args.backend, target=args.target,
                          vision_graph=args.vision_graph)


def _cmd_export(args: argparse.Namespace) -> int:
    from zipvlm.export.pipeline import ExportOptions, export_bundle
    from zipvlm.models.visionzip import VisionZipConfig

    if args.no_zip and (args.dominant is not None or args.contextual is not None):
        raise ArgumentError("--no-zip keeps every token: drop --dominant and --contextual")
    zip_config = None if args.no_zip else VisionZipConfig(
        54 if args.dominant is None else args.dominant,
        10 if args.contextual is None else args.contextual)
    options = ExportOptions(model=args.model, out=args.out, fp16=args.fp16, quant=args.quant,
                            zip=zip_config)
    summary = export_bundle(options)
    print(f"bundle ready: {summary.out} ({', '.join(summary.files)})")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from zipvlm.runtime.answer import GenerationOptions, read_image

    options = GenerationOptions(args.max_new_tokens, args.temperature, args.top_p, args.seed)
    options.validate()
    image = read_image(args.image)
    pipeline = _open_pipeline(args)
    ids = pipeline.prompt_ids(args.prompt, args.raw_prompt)
    if args.json:
        answer = pipeline.ask(image, ids, options)
        print(json.dumps({"text": answer.text, "token_ids": answer.token_ids,
                          "num_image_tokens": answer.num_image_tokens,
                          "timings_ms": answer.timings_ms}))
        return 0
    answer = pipeline.ask(image, ids, options, on_text=lambda text: print(text, end="", flush=True))
    print()
    timings = answer.timings_ms
    print(f"[{answer.num_image_tokens} image tokens; preprocess {timings['preprocess']:.0f} ms, "
          f"vision {timings['vision']:.0f} ms, prefill {timings['prefill']:.0f} ms, "
          f"first token {timings['first_token']:.0f} ms, "
          f"decode {timings['decode_tokens_per_s']:.1f} tokens/s]", file=sys.stderr)
    return 0


def _cmd_chat(args: argparse.Namespace) -> int:
    from zipvlm.runtime.answer import GenerationOptions, Session, read_image

    options = GenerationOptions(args.max_new_tokens)
    options.validate()
    session = Session(_open_pipeline(args), read_image(args.image), options)
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("you> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() == "exit":
            return 0
        if not line.strip():
            continue
        answer = session.ask(line.strip(), on_text=lambda text: print(text, end="", flush=True))
        print()
        print(f"[prefill {answer.prefill_tokens} tokens in {answer.timings_ms['prefill']:.0f} ms, "
              f"{len(answer.token_ids)} tokens at "
              f"{answer.timings_ms['decode_tokens_per_s']:.1f}/s]", file=sys.stderr)


def _cmd_stream(args: argparse.Namespace) -> int:
    from zipvlm.runtime.answer import GenerationOptions
    from zipvlm.runtime.stream import StreamOptions, stream_answers

    options = StreamOptions(args.prompt, args.every, args.max_frames,
                            GenerationOptions(args.max_new_tokens), args.window, args.system)
    options.validate()
    address = _listen_address(args.serve) if args.serve else None
    grabber = _grabber(args)  # a bad source fails here, before the bundle loads
    pipeline = _open_pipeline(args)
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
    print(f"[{stats.frames} frames captured, {stats.dropped} dropped, {stats.bad_frames} bad, "
          f"{stats.reconnects} reconnects]", file=sys.stderr)
    return 0


def _stream_and_serve(pipeline, grabber, options, address: tuple[str, int], stop: threading.Event,
                      show: Callable) -> None:
    """`stream --serve`: the stream runs as the live page's feed, the server in a thread."""
    from zipvlm.runtime.live import LiveFeed
    from zipvlm.runtime.server import create_app, serving_in_background

    model_lock = threading.Lock()
    live = LiveFeed(pipeline, grabber, options, model_lock, on_answer=show)
    name = Path(pipeline.bundle).resolve().name
    app = create_app(pipeline, name, model_lock=model_lock, live=live)
    host, port = address
    with serving_in_background(app, host, port):
        print(f"live page at http://{host}:{port}/ (OpenAI API at /v1/chat/completions); "
              "Ctrl-C stops", file=sys.stderr)
        live.start()
        try:
            live.wait(stop)
        finally:
            live.stop()


def _listen_address(value: str) -> tuple[str, int]:
    """HOST:PORT for --serve, checked free before anything loads."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ArgumentError(f"--serve takes HOST:PORT, e.g. 127.0.0.1:8080; got {value!r}")
    _check_listen(host, int(port))
    return host, int(port)


def _check_listen(host: str, port: int) -> None:
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise ArgumentError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from zipvlm.runtime.answer import GenerationOptions
    from zipvlm.runtime.openai_api import ServerLimits
    from zipvlm.runtime.server import create_app
    from zipvlm.runtime.stream import StreamOptions

    limits = ServerLimits(max_body_bytes=int(args.max_body_mb * 1024**2),
                          max_image_pixels=args.max_image_pixels, max_new_tokens=args.max_tokens,
                          default_max_tokens=min(128, args.max_tokens), request_timeout_s=args.timeout,
                          max_waiting=args.max_waiting, allow_remote_images=args.allow_remote_images)
    if min(limits.max_body_bytes, limits.max_image_pixels, limits.max_new_tokens) < 1 or \
            limits.request_timeout_s <= 0 or limits.max_waiting < 0:
        raise ArgumentError("--max-body-mb, --max-image-pixels, --max-tokens and --timeout must be "
                            "positive, --max-waiting not negative")
    _check_listen(args.host, args.port)
    name = args.model_name or Path(args.bundle).resolve().name
    pipeline = _open_pipeline(args)
    model_lock, live = threading.Lock(), None
    if args.source is not None:
        from zipvlm.runtime.live import LiveFeed

        live = LiveFeed(pipeline, _grabber(args),
                        StreamOptions(args.prompt, generation=GenerationOptions(LIVE_MAX_NEW_TOKENS)),
                        model_lock)
    app = create_app(pipeline, name, limits, model_lock, live)
    page = f"; live page at http://{args.host}:{args.port}/" if live else ""
    print(f"serving {name} on http://{args.host}:{args.port} (OpenAI API at /v1/chat/completions, "
          f"/health, /metrics{page}); Ctrl-C stops", file=sys.stderr)
    if live is not None:
        live.start()
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        if live is not None:
            live.stop()
    return 0


def stop_on_signals() -> threading.Event:
    """SIGINT/SIGTERM set the event (the current answer finishes); a second SIGINT interrupts."""
    stop = threading.Event()

    def request_stop(signum, _frame) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    return stop


def _cmd_demo(args: argparse.Namespace) -> int:
    from zipvlm.export.demo import run_demo

    run_demo(args.workdir, args.seconds)
    return 0


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (capture threads outlive redirections)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _configure_logging(verbose: bool) -> None:
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("zipvlm")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ZipvlmError as exc:
        print(f"zipvlm {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"zipvlm {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
