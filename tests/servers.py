"""A real uvicorn server on 127.0.0.1 in a thread, for tests that talk HTTP to zipvlm."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from zipvlm.serve.app import serving_in_background


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running(app) -> Iterator[str]:
    """Serve `app` until the block ends; yields its base URL."""
    port = free_port()
    with serving_in_background(app, "127.0.0.1", port):
        yield f"http://127.0.0.1:{port}"
