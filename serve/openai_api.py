"""OpenAI chat-completions requests: parsed, bounded, and refused with OpenAI-style errors.

A request is a list of messages whose content is a string or a list of `text` and
`image_url` parts. Images come as `data:` URLs with base64 bytes; http(s) URLs
are refused unless the server allows remote images. Every limit (body size,
decoded pixels, tokens) is checked before any inference runs.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
import urllib.request
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from zipvlm.runtime.generation import GenerationOptions

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ServerLimits:
    max_body_bytes: int = 20 * 1024**2
    max_image_pixels: int = 4096 * 4096
    max_new_tokens: int = 512
    default_max_tokens: int = 128
    request_timeout_s: float = 120.0  # waiting for the model plus generating
    max_waiting: int = 4  # requests queued behind the one being answered; more get 429
    allow_remote_images: bool = False
    remote_timeout_s: float = 10.0


class RequestError(Exception):
    """A request the server refuses; rendered as OpenAI's {"error": {...}} with `status`."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        kind: str = "invalid_request_error",
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class ChatRequest:
    messages: list[dict]  # in the chat template's form: content is a list of image/text parts
    images: list[np.ndarray]  # decoded, in the order their parts appear
    options: GenerationOptions
    stream: bool


def parse_chat_request(body: bytes, model_names: tuple[str, ...], limits: ServerLimits) -> ChatRequest:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise RequestError(400, "the request body must be a JSON object")
    model = payload.get("model")
    if model is not None and model not in model_names:
        raise RequestError(
            404,
            f"the model '{model}' does not exist; this server has {', '.join(model_names)}",
            "model",
            code="model_not_found",
        )
    raw_messages = payload.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise RequestError(400, "'messages' must be a non-empty list", "messages")
    messages: list[dict] = []
    images: list[np.ndarray] = []
    for i, message in enumerate(raw_messages):
        messages.append(_message(message, f"messages[{i}]", images, limits))
    if not images:
        raise RequestError(
            400, "at least one image_url part is required: zipvlm answers about images", "messages"
        )
    if messages[-1]["role"] != "user":
        raise RequestError(400, "the last message must come from the user", "messages")
    if payload.get("n", 1) != 1:
        raise RequestError(400, "only n = 1 is supported", "n")
    return ChatRequest(messages, images, _options(payload, limits), payload.get("stream") is True)


def _options(payload: dict[str, Any], limits: ServerLimits) -> GenerationOptions:
    max_tokens = payload.get("max_completion_tokens", payload.get("max_tokens"))
    max_tokens = limits.default_max_tokens if max_tokens is None else max_tokens
    if not isinstance(max_tokens, int) or not 1 <= max_tokens <= limits.max_new_tokens:
        raise RequestError(
            400, f"'max_tokens' must be an integer from 1 to {limits.max_new_tokens}", "max_tokens"
        )
    temperature = _number(payload, "temperature", 0.0, 0.0, 2.0)
    top_p = _number(payload, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0:
        raise RequestError(400, "'top_p' must be above 0", "top_p")
    seed = payload.get("seed")
    if seed is not None and not isinstance(seed, int):
        raise RequestError(400, "'seed' must be an integer", "seed")
    return GenerationOptions(max_tokens, temperature, top_p, seed)


def _number(payload: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = payload.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise RequestError(400, f"'{name}' must be a number from {low:g} to {high:g}", name)
    return float(value)


def _message(message: Any, where: str, images: list[np.ndarray], limits: ServerLimits) -> dict:
    if not isinstance(message, dict) or message.get("role") not in ROLES:
        raise RequestError(400, f"{where} must be an object with a role ({', '.join(ROLES)})", where)
    content = message.get("content")
    if isinstance(content, str):
        return {"role": message["role"], "content": [{"type": "text", "text": content}]}
    if not isinstance(content, list):
        raise RequestError(400, f"{where}.content must be a string or a list of parts", where)
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            url = part.get("image_url", {})
            url = url.get("url") if isinstance(url, dict) else url
            images.append(load_image_url(url, f"{where}.content[{j}]", limits))
            parts.append({"type": "image"})
        else:
            raise RequestError(400, f"{where}.content[{j}] must be a text or image_url part", where)
    return {"role": message["role"], "content": parts}


def load_image_url(url: Any, where: str, limits: ServerLimits) -> np.ndarray:
    """A data: URL (or, if allowed, an http(s) URL) decoded to an OpenCV image."""
    if not isinstance(url, str):
        raise RequestError(400, f"{where}.image_url.url must be a string", where)
    if url.startswith("data:"):
        header, _, encoded = url.partition(",")
        if not header.endswith(";base64"):
            raise RequestError(400, f"{where}: a data URL must be base64 (data:image/...;base64,...)", where)
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(400, f"{where}: the image is not valid base64", where) from None
    elif url.startswith(("http://", "https://")):
        if not limits.allow_remote_images:
            raise RequestError(
                400,
                f"{where}: remote image URLs are refused; send a data: URL "
                "(or start the server with --allow-remote-images)",
                where,
            )
        data = _fetch(url, where, limits)
    else:
        raise RequestError(400, f"{where}: the image URL must be a data: URL", where)
    return decode_image(data, where, limits)


def decode_image(data: bytes, where: str, limits: ServerLimits) -> np.ndarray:
    size = image_size_from_header(data)
    if size is not None and size[0] * size[1] > limits.max_image_pixels:
        raise RequestError(
            413,
            f"{where}: the image is {size[0]}x{size[1]}, over the limit of {limits.max_image_pixels} pixels",
            where,
        )
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise RequestError(400, f"{where}: the data is not an image OpenCV can decode", where)
    if image.shape[0] * image.shape[1] > limits.max_image_pixels:
        raise RequestError(
            413,
            f"{where}: the image is {image.shape[1]}x{image.shape[0]}, over the "
            f"limit of {limits.max_image_pixels} pixels",
            where,
        )
    return np.right_shift(image, 8).astype(np.uint8) if image.dtype == np.uint16 else image


def image_size_from_header(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG or JPEG read from its header, before decoding any pixels."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:2] == b"\xff\xd8":
        at = 2
        while at + 9 < len(data) and data[at] == 0xFF:
            marker, length = data[at + 1], struct.unpack(">H", data[at + 2 : at + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
                height, width = struct.unpack(">HH", data[at + 5 : at + 9])
                return width, height
            at += 2 + length
    return None


def _fetch(url: str, where: str, limits: ServerLimits) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=limits.remote_timeout_s) as response:  # noqa: S310
            data = response.read(limits.max_body_bytes + 1)
    except OSError as exc:
        raise RequestError(400, f"{where}: cannot fetch {url}: {exc}", where) from None
    if len(data) > limits.max_body_bytes:
        raise RequestError(413, f"{where}: the image at {url} is over {limits.max_body_bytes} bytes", where)
    return data
