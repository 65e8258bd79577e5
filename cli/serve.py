"""`zipvlm serve`: an OpenAI-compatible HTTP server over a bundle, with an optional live page."""

from __future__ import annotations

import argparse
import sys
import threading

from zipvlm.bundle.errors import ArgumentError
from zipvlm.cli.options import (
    add_bundle,
    add_provider,
    add_source_options,
    check_listen,
    open_grabber,
    open_pipeline,
)

LIVE_MAX_NEW_TOKENS = 32  # the live page's answers under `serve --source`: short, so they keep up


def register(commands) -> None:
    serve = commands.add_parser(
        "serve",
        help="an OpenAI-compatible HTTP server over a bundle",
        description="Serve a bundle over HTTP: POST /v1/chat/completions (OpenAI-compatible; "
        "images as data: URLs; stream: true as server-sent events), GET /v1/models, "
        "GET /health, GET /metrics (Prometheus). One answer at a time; up to "
        "--max-waiting requests queue, more get 429. With --source, also a live "
        "page at /: the source's preview with the kept patches, the prompt, answers.",
    )
    add_bundle(serve)
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.add_argument("--model-name", help="the model id clients send (default: the bundle's folder name)")
    serve.add_argument(
        "--allow-remote-images", action="store_true", help="fetch http(s) image URLs (refused by default)"
    )
    serve.add_argument("--max-body-mb", type=float, default=20.0, help="request body cap (default 20)")
    serve.add_argument(
        "--max-image-pixels",
        type=int,
        default=4096 * 4096,
        help="decoded image cap, width x height (default 4096 x 4096)",
    )
    serve.add_argument("--max-tokens", type=int, default=512, help="largest max_tokens allowed (default 512)")
    serve.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds a request may wait and run (default 120), then 503",
    )
    serve.add_argument(
        "--max-waiting",
        type=int,
        default=4,
        help="requests queued behind the running one (default 4); more get 429",
    )
    serve.add_argument(
        "--source",
        metavar="SRC",
        help="also stream SRC (as zipvlm stream takes it) and serve the live page at /",
    )
    serve.add_argument(
        "--prompt",
        default="What is in front of the camera?",
        help="the live page's first question (editable on the page)",
    )
    add_source_options(serve)
    add_provider(serve)
    serve.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from zipvlm.runtime.generation import GenerationOptions
    from zipvlm.runtime.stream import StreamOptions
    from zipvlm.serve.app import create_app
    from zipvlm.serve.openai_api import ServerLimits

    limits = ServerLimits(
        max_body_bytes=int(args.max_body_mb * 1024**2),
        max_image_pixels=args.max_image_pixels,
        max_new_tokens=args.max_tokens,
        default_max_tokens=min(128, args.max_tokens),
        request_timeout_s=args.timeout,
        max_waiting=args.max_waiting,
        allow_remote_images=args.allow_remote_images,
    )
    if (
        min(limits.max_body_bytes, limits.max_image_pixels, limits.max_new_tokens) < 1
        or limits.request_timeout_s <= 0
        or limits.max_waiting < 0
    ):
        raise ArgumentError(
            "--max-body-mb, --max-image-pixels, --max-tokens and --timeout must be "
            "positive, --max-waiting not negative"
        )
    check_listen(args.host, args.port)
    pipeline = open_pipeline(args)
    name = args.model_name or pipeline.bundle.name
    model_lock, live = threading.Lock(), None
    if args.source is not None:
        from zipvlm.serve.live import LiveFeed

        live = LiveFeed(
            pipeline,
            open_grabber(args),
            StreamOptions(args.prompt, generation=GenerationOptions(LIVE_MAX_NEW_TOKENS)),
            model_lock,
        )
    app = create_app(pipeline, name, limits, model_lock, live)
    page = f"; live page at http://{args.host}:{args.port}/" if live else ""
    print(
        f"serving {name} on http://{args.host}:{args.port} (OpenAI API at /v1/chat/completions, "
        f"/health, /metrics{page}); Ctrl-C stops",
        file=sys.stderr,
    )
    if live is not None:
        live.start()
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        if live is not None:
            live.stop()
    return 0
