"""The load generator: seeded requests, Poisson arrivals or a fixed concurrency, streamed timings.

Each request is a `/v1/completions` call on token-id prompts with `ignore_eos` and
`min_tokens = max_tokens`, streamed (`return_token_ids`, so every chunk says how many tokens
it carries). Per request it records the send time, the time of every chunk with its token
count, and from those TTFT, the inter-token latencies, E2E and the output tokens.

Arrivals: `poisson` draws exponential gaps at `rate` requests/s from the seed; `concurrency`
keeps exactly `concurrency` requests in flight until all are sent. The run is bounded by the
request count and by `max_duration_s` (requests still open then are cancelled and recorded
as unfinished). Only loopback traffic is sent.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FIRST_ORDINARY_TOKEN = 3


@dataclass(frozen=True)
class Request:
    index: int
    prompt: list[int]
    output_tokens: int
    arrival_s: float  # offset from the run's start (poisson); 0 for concurrency


@dataclass
class Record:
    index: int
    prompt_tokens: int
    requested_tokens: int
    sent: float | None = None  # perf_counter seconds; None: never sent
    chunks: list[tuple[float, int]] = field(default_factory=list)  # (time, tokens in the chunk)
    finished: float | None = None
    error: str | None = None

    @property
    def output_tokens(self) -> int:
        return sum(count for _, count in self.chunks)

    @property
    def ok(self) -> bool:
        return self.error is None and self.finished is not None and self.output_tokens == self.requested_tokens

    @property
    def ttft_s(self) -> float | None:
        return self.chunks[0][0] - self.sent if self.chunks else None

    @property
    def e2e_s(self) -> float | None:
        return None if self.finished is None else self.finished - self.sent

    @property
    def inter_token_s(self) -> list[float]:
        """Gaps between successive chunks; a chunk of k tokens adds k-1 zero gaps (its tokens arrived together)."""
        gaps: list[float] = []
        for (earlier, _), (later, count) in itertools.pairwise(self.chunks):
            gaps.append(later - earlier)
            gaps.extend([0.0] * (count - 1))
        return gaps

    @property
    def tpot_s(self) -> float | None:
        tokens = self.output_tokens
        if not self.ok or tokens < 2:
            return None
        return (self.finished - self.chunks[0][0]) / (tokens - 1)


def draw_length(spec: dict[str, Any], rng: np.random.Generator) -> int:
    """One length from a configured distribution: {distribution: fixed, value} or {uniform, min, max} (inclusive)."""
    if spec["distribution"] == "fixed":
        return int(spec["value"])
    return int(rng.integers(spec["min"], spec["max"] + 1))


def make_requests(
    count: int, prompt_spec: dict[str, Any], output_spec: dict[str, Any], vocab_size: int, seed: int, rate: float | None
) -> list[Request]:
    """`count` requests from the seed: lengths, token ids and (at a rate) Poisson arrival offsets."""
    rng = np.random.default_rng(seed)
    requests, clock = [], 0.0
    for index in range(count):
        prompt_len = draw_length(prompt_spec, rng)
        output_len = draw_length(output_spec, rng)
        prompt = [int(t) for t in rng.integers(FIRST_ORDINARY_TOKEN, vocab_size, size=prompt_len)]
        if rate is not None:
            clock += float(rng.exponential(1.0 / rate))
        requests.append(Request(index, prompt, output_len, clock if rate is not None else 0.0))
    return requests


async def _send(client: Any, url: str, model: str, request: Request, record: Record) -> None:
    body = {
        "model": model,
        "prompt": request.prompt,
        "max_tokens": request.output_tokens,
        "min_tokens": request.output_tokens,
        "ignore_eos": True,
        "temperature": 0.0,
        "stream": True,
        "return_token_ids": True,
    }
    record.sent = time.perf_counter()
    try:
        async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
            if response.status_code != 200:
                record.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                now = time.perf_counter()
                choices = json.loads(line[6:]).get("choices") or []
                tokens = sum(len(choice.get("token_ids") or []) for choice in choices)
                if tokens:
                    record.chunks.append((now, tokens))
        record.finished = time.perf_counter()
    except asyncio.CancelledError:
        record.error = "cancelled at serving.max_duration_s"
        raise
    except Exception as exc:  # a failed request is recorded, the run goes on
        record.error = f"{type(exc).__name__}: {exc}"[:300]


async def _run(
    url: str, model: str, requests: list[Request], concurrency: int | None, max_duration_s: float
) -> tuple[float, list[Record]]:
    import httpx

    records = [Record(r.index, len(r.prompt), r.output_tokens) for r in requests]
    limits = httpx.Limits(max_connections=len(requests) + 1, max_keepalive_connections=len(requests) + 1)
    async with httpx.AsyncClient(timeout=httpx.Timeout(max_duration_s), limits=limits, trust_env=False) as client:
        start = time.perf_counter()
        tasks: list[asyncio.Task] = []
        if concurrency is None:  # open loop: each request at its Poisson arrival time
            for request, record in zip(requests, records, strict=True):
                delay = start + request.arrival_s - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                if time.perf_counter() - start > max_duration_s:
                    break
                tasks.append(asyncio.create_task(_send(client, url, model, request, record)))
        else:  # closed loop: `concurrency` in flight
            queue = list(zip(requests, records, strict=True))

            async def worker() -> None:
                while queue and time.perf_counter() - start <= max_duration_s:
                    request, record = queue.pop(0)
                    await _send(client, url, model, request, record)

            tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
        remaining = max(0.0, max_duration_s - (time.perf_counter() - start))
        _, pending = await asyncio.wait(tasks, timeout=remaining) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    for record in records:
        if record.sent is None and record.error is None:
            record.error = "not sent before serving.max_duration_s"
    return start, records


def run_load(
    url: str, model: str, requests: list[Request], concurrency: int | None, max_duration_s: float
) -> tuple[float, list[Record]]:
    """Send every request (bounded by `max_duration_s`); return the start time and the records."""
    return asyncio.run(_run(url, model, requests, concurrency, max_duration_s))
