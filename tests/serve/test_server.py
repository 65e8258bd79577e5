"""`zipvlm serve`: a real HTTP server on 127.0.0.1, checked with the official openai client."""

from __future__ import annotations

import base64
import socket
from concurrent.futures import ThreadPoolExecutor

import cv2
import httpx
import numpy as np
import pytest
from images import photo
from openai import OpenAI
from servers import running

from zipvlm.cli.main import main
from zipvlm.runtime.generation import GenerationOptions
from zipvlm.runtime.pipeline import BundlePipeline
from zipvlm.serve.app import create_app
from zipvlm.serve.openai_api import ServerLimits

QUESTION = "What is in the image?"
LIMITS = ServerLimits(
    max_body_bytes=2 * 1024**2, max_image_pixels=1000 * 1000, max_waiting=2, request_timeout_s=60
)


def data_url(image: np.ndarray, ext: str = ".png") -> str:
    return "data:image/png;base64," + base64.b64encode(cv2.imencode(ext, image)[1].tobytes()).decode()


@pytest.fixture(scope="module")
def pipeline(tiny_bundles):
    return BundlePipeline.open(tiny_bundles["clip-llama"])


@pytest.fixture(scope="module")
def url(pipeline):
    with running(create_app(pipeline, "tiny", LIMITS)) as base:
        yield base


def user_message(image: np.ndarray, question: str = QUESTION) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(image)}},
                {"type": "text", "text": question},
            ],
        }
    ]


def test_the_openai_client_gets_the_same_answer_as_zipvlm_run(url, pipeline):
    image = photo(240, 320, seed=3)
    client = OpenAI(base_url=f"{url}/v1", api_key="not-needed")
    response = client.chat.completions.create(model="tiny", messages=user_message(image), max_tokens=12)
    want = pipeline.ask(image, pipeline.prompt_ids(QUESTION, None), GenerationOptions(12))
    assert response.choices[0].message.content == want.text
    assert response.usage.completion_tokens == len(want.token_ids)
    assert response.usage.model_extra["visual_tokens"] == 64
    assert response.choices[0].finish_reason == ("length" if len(want.token_ids) == 12 else "stop")


def test_streamed_deltas_add_up_to_the_answer(url):
    client = OpenAI(base_url=f"{url}/v1", api_key="not-needed")
    messages = user_message(photo(240, 320, seed=4))
    whole = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10)
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, stream=True))
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_two_images_and_a_system_message_are_one_prompt(url):
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(photo(120, 160, seed=5))}},
                {"type": "image_url", "image_url": {"url": data_url(photo(120, 160, seed=6))}},
                {"type": "text", "text": "What changed?"},
            ],
        },
    ]
    response = httpx.post(
        f"{url}/v1/chat/completions", json={"messages": messages, "max_tokens": 3}, timeout=60
    )
    assert response.status_code == 200
    assert response.json()["usage"]["visual_tokens"] == 128


def image_part(url_text: str) -> dict:
    return {
        "model": "tiny",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url_text}},
                    {"type": "text", "text": "Hi?"},
                ],
            }
        ],
    }


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b'{"model": "tiny"}', 400, "'messages' must be a non-empty list"),
        (image_part("data:image/png;base64,@@@"), 400, "not valid base64"),
        (
            image_part("data:image/png;base64," + base64.b64encode(b"plain text").decode()),
            400,
            "not an image OpenCV can decode",
        ),
        (image_part(data_url(np.zeros((1100, 1000, 3), np.uint8))), 413, "over the limit of 1000000 pixels"),
        (image_part("http://example.com/cat.jpg"), 400, "remote image URLs are refused"),
        (
            {**image_part(data_url(photo(60, 80))), "model": "gpt-4o"},
            404,
            "the model 'gpt-4o' does not exist",
        ),
        ({**image_part(data_url(photo(60, 80))), "max_tokens": 0}, 400, "'max_tokens' must be"),
        ({"messages": [{"role": "user", "content": "no image here"}]}, 400, "at least one image_url"),
    ],
)
def test_bad_requests_get_a_4xx_with_an_openai_error_object(url, body, status, fragment):
    send = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = httpx.post(f"{url}/v1/chat/completions", timeout=30, **send)
    assert response.status_code == status
    error = response.json()["error"]
    assert fragment in error["message"] and set(error) == {"message", "type", "param", "code"}


def test_a_body_over_the_cap_is_413(url):
    response = httpx.post(f"{url}/v1/chat/completions", content=b"x" * (3 * 1024**2), timeout=30)
    assert response.status_code == 413 and "over the limit" in response.json()["error"]["message"]


def test_sixteen_concurrent_clients_get_answers_or_429_and_the_server_stays_up(url):
    body = {"model": "tiny", "messages": user_message(photo(120, 160, seed=7)), "max_tokens": 4}

    def ask(_):
        return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(ask, range(16)))
    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {200, 429, 503} and 200 in statuses and 429 in statuses
    assert all(r.headers.get("retry-after") for r in responses if r.status_code != 200)
    assert httpx.get(f"{url}/health", timeout=10).json()["status"] == "ok"


def test_metrics_are_prometheus_text_with_stage_latencies(url):
    httpx.post(f"{url}/v1/chat/completions", content=b"{bad", timeout=30)
    text = httpx.get(f"{url}/metrics", timeout=10).text
    assert 'zipvlm_stage_seconds_bucket{le="0.005",stage="vision"}' in text
    assert 'zipvlm_requests_total{status="400"}' in text
    assert "zipvlm_generated_tokens_total" in text and "zipvlm_rejected_total" in text


def test_a_port_in_use_is_one_line(tiny_bundles, capsys):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        code = main(["serve", "--bundle", str(tiny_bundles["clip-llama"]), "--port", str(port)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"zipvlm serve: error: cannot listen on 127.0.0.1:{port}")
