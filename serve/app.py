"""`zipvlm serve`: an OpenAI-compatible HTTP server over one bundle.

With a live feed (`--source`) it also serves `GET /`, a page with an MJPEG preview
of the source (kept patches tinted), the prompt to edit, and answers as they come.

One answer is generated at a time, in a worker thread, so the event loop keeps
answering /health and /metrics. Up to `max_waiting` requests queue behind it;
more get 429 with Retry-After, never a pile-up. A request that waits and runs
longer than the timeout is stopped at its next token and answered with 503.
"""

from __future__ import annotations

import asyncio
import html
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from zipvlm.bundle.errors import ZipvlmError
from zipvlm.runtime.conversation import Session
from zipvlm.runtime.generation import Answer, ContextLengthError, check_context
from zipvlm.runtime.pipeline import BundlePipeline
from zipvlm.serve.live import LiveFeed
from zipvlm.serve.metrics import ServerMetrics
from zipvlm.serve.openai_api import ChatRequest, RequestError, ServerLimits, parse_chat_request

RETRY_AFTER_S = 2
PREVIEW_PERIOD_S = 1 / 15  # the MJPEG preview's frame period


class Cancelled(Exception):
    """Raised from the token callback to stop a generation that ran out of time."""


@dataclass
class Completion:
    answer: Answer
    prompt_tokens: int
    finish_reason: str  # "stop" (end token) or "length" (max_tokens reached)

    def usage(self) -> dict:
        generated = len(self.answer.token_ids)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": generated,
            "total_tokens": self.prompt_tokens + generated,
            "visual_tokens": self.answer.num_image_tokens,
        }


class ModelWorker:
    """Admission control and the one thread that talks to the bundle."""

    def __init__(
        self,
        pipeline: BundlePipeline,
        limits: ServerLimits,
        metrics: ServerMetrics,
        model_lock: threading.Lock,
    ):
        self.pipeline, self.limits, self.metrics = pipeline, limits, metrics
        self._queue = asyncio.Lock()  # the order requests are served in
        self._model = model_lock  # held by the generating thread, even one timed out
        self._waiting = 0

    async def complete(
        self, request: ChatRequest, on_text: Callable[[str], None] | None = None
    ) -> Completion:
        if self._waiting >= self.limits.max_waiting + 1:
            self.metrics.rejected.inc()
            raise RequestError(
                429,
                "the server is busy: too many requests waiting; retry later",
                kind="rate_limit_error",
                code="server_busy",
            )
        self._waiting += 1
        cancelled = threading.Event()
        try:
            return await asyncio.wait_for(
                self._run(request, on_text, cancelled), self.limits.request_timeout_s
            )
        except TimeoutError:
            cancelled.set()
            self.metrics.timeouts.inc()
            raise RequestError(
                503,
                f"the request took longer than {self.limits.request_timeout_s:g} s",
                kind="server_error",
                code="timeout",
            ) from None
        finally:
            self._waiting -= 1

    async def _run(self, request: ChatRequest, on_text, cancelled: threading.Event) -> Completion:
        async with self._queue:
            return await asyncio.to_thread(self._answer, request, on_text, cancelled)

    def _answer(self, request: ChatRequest, on_text, cancelled: threading.Event) -> Completion:
        with self._model:
            if cancelled.is_set():
                raise Cancelled
            return self._generate(request, on_text, cancelled)

    def _generate(self, request: ChatRequest, on_text, cancelled: threading.Event) -> Completion:
        pipeline, prompts = self.pipeline, self.pipeline.prompts
        seen = [pipeline.embed_image(image) for image in request.images]
        ids = prompts.encode(prompts.conversation_text(request.messages), len(seen))
        try:
            check_context(
                len(ids), request.options.max_new_tokens, pipeline.context_length, "prompt with its images"
            )
        except ContextLengthError as exc:
            raise RequestError(400, str(exc), "messages", code="context_length_exceeded") from None

        def stream(text: str) -> None:
            if cancelled.is_set():
                raise Cancelled
            if on_text is not None:
                on_text(text)

        session = Session(
            pipeline,
            None,
            request.options,
            context=len(ids) + request.options.max_new_tokens,
            image_embeds=np.concatenate([image.embeds for image in seen]),
            keep_indices=np.concatenate([image.keep_indices for image in seen]),
        )
        answer = session.ask_ids(ids, stream)
        answer.timings = answer.timings.with_image(
            sum(image.preprocess_ms for image in seen), sum(image.vision_ms for image in seen)
        )
        self.metrics.observe(answer)
        finish = "length" if len(answer.token_ids) >= request.options.max_new_tokens else "stop"
        return Completion(answer, len(ids), finish)


def _completion_body(completion: Completion, model: str, request_id: str) -> dict:
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": completion.answer.text},
                "finish_reason": completion.finish_reason,
            }
        ],
        "usage": completion.usage(),
        "timings_ms": completion.answer.timings_ms,
    }


def as_request_error(exc: Exception, metrics: ServerMetrics) -> RequestError:
    """Our refusals as they are; a prompt the template refuses is a 400; anything else a 500."""
    if isinstance(exc, RequestError):
        return exc
    if isinstance(exc, ZipvlmError):
        return RequestError(400, str(exc))
    metrics.errors.inc()
    return RequestError(500, f"the model failed: {type(exc).__name__}: {exc}", kind="server_error")


def _error(exc: RequestError) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if exc.status in (429, 503) else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"the request body is over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    pipeline: BundlePipeline,
    model_name: str,
    limits: ServerLimits | None = None,
    model_lock: threading.Lock | None = None,
    live: LiveFeed | None = None,
) -> Starlette:
    """The app; `model_lock` is shared with a live feed, if any, so one answer runs at a time."""
    limits = limits or ServerLimits()
    metrics = ServerMetrics()
    worker = ModelWorker(pipeline, limits, metrics, model_lock or threading.Lock())

    async def chat_completions(request: Request) -> Response:
        started = time.perf_counter()
        try:
            chat = parse_chat_request(await _read_body(request, limits.max_body_bytes), (model_name,), limits)
            request_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
            if chat.stream:
                metrics.requests.labels("200").inc()
                return StreamingResponse(
                    _events(worker, chat, model_name, request_id, metrics), media_type="text/event-stream"
                )
            completion = await worker.complete(chat)
            metrics.requests.labels("200").inc()
            return JSONResponse(_completion_body(completion, model_name, request_id))
        except Exception as exc:  # noqa: BLE001 - every failure becomes an OpenAI error object
            error = as_request_error(exc, metrics)
            metrics.requests.labels(str(error.status)).inc()
            return _error(error)
        finally:
            metrics.request_seconds.observe(time.perf_counter() - started)

    async def health(_: Request) -> Response:
        return JSONResponse(
            {"status": "ok", "model": model_name, "num_image_tokens": pipeline.num_image_tokens}
        )

    async def models(_: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "zipvlm"}],
            }
        )

    async def prometheus(_: Request) -> Response:
        return PlainTextResponse(metrics.render(), media_type=metrics.content_type)

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", models),
        Route("/health", health),
        Route("/metrics", prometheus),
    ]
    return Starlette(routes=routes + (live_routes(live, limits) if live is not None else []))


def _answer_item(answer: dict) -> str:
    """One answer as the live page lists it (the page's script builds the same for new ones)."""
    error = answer.get("error")
    text = html.escape(f"error: {error}" if error else answer["text"])
    css = ' class="error"' if error else ""
    return f'<li><div{css}>{text}</div><div class="meta">{html.escape(answer["summary"])}</div></li>'


def live_routes(live: LiveFeed, limits: ServerLimits) -> list[Route]:
    page = (Path(__file__).parent / "live_page.html").read_text()

    async def index(_: Request) -> Response:
        recent = list(live.answers)[::-1][:20]  # newest first, as the page keeps them
        items = "".join(_answer_item(answer) for answer in recent)
        return HTMLResponse(page.format(answer_count=len(recent), answers=items))

    async def state(_: Request) -> Response:
        return JSONResponse(
            {
                "prompt": live.prompt,
                "num_image_tokens": live.pipeline.num_image_tokens,
                "answers": list(live.answers)[-10:],
                "capture": vars(live.grabber.stats),
            }
        )

    async def set_prompt(request: Request) -> Response:
        try:
            body = json.loads(await _read_body(request, limits.max_body_bytes) or b"null")
            live.set_prompt(body.get("prompt") if isinstance(body, dict) else None)
        except json.JSONDecodeError:
            return _error(RequestError(400, "the request body is not valid JSON"))
        except (RequestError, ZipvlmError) as exc:
            return _error(exc if isinstance(exc, RequestError) else RequestError(400, str(exc), "prompt"))
        return JSONResponse({"prompt": live.prompt})

    async def mjpeg(request: Request) -> Response:
        async def frames() -> AsyncIterator[bytes]:
            while not await request.is_disconnected():
                jpeg = await asyncio.to_thread(live.frame_jpeg)
                if jpeg is not None:
                    yield (
                        b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                        + str(len(jpeg)).encode()
                        + b"\r\n\r\n"
                        + jpeg
                        + b"\r\n"
                    )
                await asyncio.sleep(PREVIEW_PERIOD_S)

        return StreamingResponse(frames(), media_type="multipart/x-mixed-replace; boundary=frame")

    async def events(request: Request) -> Response:
        async def answers() -> AsyncIterator[str]:
            queue = live.subscribe()
            try:
                while not await request.is_disconnected():
                    try:
                        yield f"data: {await asyncio.wait_for(queue.get(), 1.0)}\n\n"
                    except TimeoutError:
                        yield ": keep-alive\n\n"
            finally:
                live.unsubscribe(queue)

        return StreamingResponse(answers(), media_type="text/event-stream")

    return [
        Route("/", index),
        Route("/live/state", state),
        Route("/live/prompt", set_prompt, methods=["POST"]),
        Route("/live/stream.mjpg", mjpeg),
        Route("/live/events", events),
    ]


async def _events(
    worker: ModelWorker, chat: ChatRequest, model: str, request_id: str, metrics: ServerMetrics
) -> AsyncIterator[str]:
    """Server-sent events as OpenAI streams them: role, content deltas, finish, [DONE]."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str] = asyncio.Queue()

    def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> str:
        body = {
            "id": request_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body)}\n\n"

    def on_text(text: str) -> None:
        loop.call_soon_threadsafe(pieces.put_nowait, text)

    task = asyncio.ensure_future(worker.complete(chat, on_text))
    yield chunk({"role": "assistant", "content": ""})
    while not (task.done() and pieces.empty()):
        getter = asyncio.ensure_future(pieces.get())
        await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            yield chunk({"content": getter.result()})
        else:
            getter.cancel()
    try:
        completion = task.result()
    except Exception as exc:  # noqa: BLE001 - the status line is sent: report it in the stream
        yield f"data: {json.dumps(as_request_error(exc, metrics).body())}\n\n"
    else:
        yield chunk({}, completion.finish_reason, completion.usage())
    yield "data: [DONE]\n\n"


@contextmanager
def serving_in_background(app: Starlette, host: str, port: int) -> Iterator[None]:
    """Serve `app` from a thread while the block runs (`zipvlm stream --serve`): the caller's
    thread keeps the stream loop and the signal handlers."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="zipvlm-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        server.should_exit = True
        raise ZipvlmError(f"the HTTP server did not start on {host}:{port}")
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)
