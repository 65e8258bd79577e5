"""Prometheus metrics of the server: per-stage latency, tokens, requests, refusals, errors."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from zipvlm.runtime.generation import Answer

# Seconds; covers a tiny model's milliseconds up to a CPU's tens of seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
STAGES = ("preprocess", "vision", "prefill", "first_token")


class ServerMetrics:
    """One registry per server, so that tests and several apps in a process stay apart."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.stage_seconds = Histogram(
            "zipvlm_stage_seconds", "Latency of each pipeline stage", ["stage"], buckets=BUCKETS, registry=r
        )
        self.request_seconds = Histogram(
            "zipvlm_request_seconds", "Chat completion latency", buckets=BUCKETS, registry=r
        )
        self.requests = Counter(
            "zipvlm_requests", "Chat completion requests by HTTP status", ["status"], registry=r
        )
        self.generated_tokens = Counter("zipvlm_generated_tokens", "Tokens generated", registry=r)
        self.image_tokens = Counter("zipvlm_image_tokens", "Visual tokens fed to the LLM", registry=r)
        self.rejected = Counter("zipvlm_rejected", "Requests refused with 429 (queue full)", registry=r)
        self.timeouts = Counter("zipvlm_timeouts", "Requests stopped at the timeout", registry=r)
        self.errors = Counter("zipvlm_errors", "Requests that failed inside the model", registry=r)

    def observe(self, answer: Answer) -> None:
        for stage in STAGES:
            self.stage_seconds.labels(stage).observe(answer.timings_ms.get(stage, 0.0) / 1000)
        self.generated_tokens.inc(len(answer.token_ids))
        self.image_tokens.inc(answer.num_image_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
