"""The server's counters, gauges and histograms, written in the Prometheus text format
(version 0.0.4) without a client library. Updated from the event loop and the scheduler's
thread, so every change holds one lock."""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Sequence

__all__ = ["Metrics"]

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class _Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.n += 1

    def lines(self, name: str) -> list[str]:
        out, cum = [], 0
        for le, n in zip([*map(_num, self.buckets), "+Inf"], self.counts):
            cum += n
            out.append(f'{name}_bucket{{le="{le}"}} {cum}')
        out += [f"{name}_sum {_num(self.sum)}", f"{name}_count {self.n}"]
        return out


def _num(v: float) -> str:
    return repr(float(v)) if v != int(v) else str(int(v))


class Metrics:
    """What /metrics reports. ``gauges`` returns (queue depth, busy slots, slots) when read."""

    def __init__(self, gauges: Callable[[], tuple[int, int, int]]) -> None:
        self._lock = threading.Lock()
        self._gauges = gauges
        self.requests: dict[tuple[str, int], int] = {}
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.generated_tokens = 0
        self.cancelled = 0
        self.ttft = _Histogram(TTFT_BUCKETS)
        self.latency = _Histogram(LATENCY_BUCKETS)

    def request(self, path: str, status: int) -> None:
        with self._lock:
            key = (path, status)
            self.requests[key] = self.requests.get(key, 0) + 1

    def generation(
        self,
        prompt: int,
        cached: int,
        generated: int,
        ttft: float | None,
        latency: float,
        cancelled: bool,
    ) -> None:
        with self._lock:
            self.prompt_tokens += prompt
            self.cached_tokens += cached
            self.generated_tokens += generated
            self.cancelled += cancelled
            if ttft is not None:
                self.ttft.observe(ttft)
            self.latency.observe(latency)

    def render(self) -> str:
        queue, busy, slots = self._gauges()
        lines: list[str] = []

        def metric(name: str, kind: str, help: str, body: list[str]) -> None:
            lines.extend([f"# HELP {name} {help}", f"# TYPE {name} {kind}", *body])

        with self._lock:
            metric(
                "rllm_requests_total",
                "counter",
                "HTTP requests by path and status code.",
                [
                    f'rllm_requests_total{{path="{p}",status="{s}"}} {n}'
                    for (p, s), n in sorted(self.requests.items())
                ],
            )
            for name, help, value in (
                ("rllm_prompt_tokens_total", "Prompt tokens of generations.", self.prompt_tokens),
                (
                    "rllm_prompt_tokens_cached_total",
                    "Prompt tokens reused from a slot's cache instead of evaluated.",
                    self.cached_tokens,
                ),
                ("rllm_generation_tokens_total", "Tokens generated.", self.generated_tokens),
                (
                    "rllm_requests_cancelled_total",
                    "Generations cancelled, mostly by clients that disconnected.",
                    self.cancelled,
                ),
            ):
                metric(name, "counter", help, [f"{name} {value}"])
            metric(
                "rllm_time_to_first_token_seconds",
                "histogram",
                "Time from a request's arrival to its first generated token.",
                self.ttft.lines("rllm_time_to_first_token_seconds"),
            )
            metric(
                "rllm_request_duration_seconds",
                "histogram",
                "Time from a request's arrival to its last generated token.",
                self.latency.lines("rllm_request_duration_seconds"),
            )
        for name, help, value in (
            ("rllm_queue_depth", "Requests waiting for a free slot.", queue),
            ("rllm_slots_busy", "Slots generating now.", busy),
            ("rllm_slots_total", "Slots (--parallel).", slots),
        ):
            metric(name, "gauge", help, [f"{name} {value}"])
        return "\n".join(lines) + "\n"
