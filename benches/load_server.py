"""Load test of an OpenAI-compatible server on this machine: streaming completions from 1, 4
and 32 concurrent clients, each sending a few requests one after another. Prints, per client
count, the errors, the aggregate generated tokens per second and time-to-first-token (TTFT)
p50/p95. Any server that speaks OpenAI's streaming /v1/completions works, so the same run
measures rllm and llama.cpp's llama-server:

    # rllm, started and stopped by this script on a free port
    python benches/load_server.py --serve MODEL.gguf --parallel 4 -c 2048 -t 2

    # a server that is already running (loopback only)
    llama-server -m MODEL.gguf --port 8081 --parallel 4 -c 2048 -t 2 &
    python benches/load_server.py --url http://127.0.0.1:8081

    # both, one after the other on the same model, flags and machine, with the ratios
    python benches/load_server.py --serve MODEL.gguf --llama-server PATH/llama-server \
        --parallel 4 -c 2048 -t 2 --clients 1,4,16 --rounds 2

Requests ask for exactly ``--max-tokens`` tokens (``ignore_eos``, which both servers accept),
so both generate the same amount. Traffic goes to loopback addresses only; every phase is
bounded in requests and in time (``--deadline``), and the script stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from rllm.bench import system_info

WORDS = "river mountain library engine garden violin harbor lantern orchard comet".split()


@dataclass
class Phase:
    clients: int
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    tokens: int = 0
    ttft: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    wall: float = 0.0


def loopback_only(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        addrs = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        sys.exit(f"cannot resolve {host!r}")
    if not addrs or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs):
        sys.exit(f"refusing {url}: this load test only targets loopback addresses")


def prompt(client: int, i: int) -> str:
    a, b = WORDS[client % len(WORDS)], WORDS[(client // len(WORDS) + i) % len(WORDS)]
    return f"Client {client}, request {i}. Write a short story about a {a} and a {b}."


async def one_request(
    http: httpx.AsyncClient, args: argparse.Namespace, client: int, i: int, phase: Phase
) -> None:
    body = {
        "model": args.model,
        "prompt": prompt(client, i),
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    start = time.perf_counter()
    first: float | None = None
    chunks, usage = 0, 0
    try:
        async with http.stream("POST", "/v1/completions", json=body) as r:
            if r.status_code != 200:
                await r.aread()
                phase.errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                return
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[len("data: ") :]
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if "error" in event:
                    phase.errors.append(str(event["error"])[:200])
                    return
                for choice in event.get("choices") or []:
                    if choice.get("text"):
                        chunks += 1
                        if first is None:
                            first = time.perf_counter()
                if event.get("usage"):
                    usage = event["usage"].get("completion_tokens", 0)
    except (httpx.HTTPError, ValueError) as e:
        phase.errors.append(f"{type(e).__name__}: {e}")
        return
    end = time.perf_counter()
    phase.requests += 1
    phase.tokens += usage or chunks
    if first is not None:
        phase.ttft.append(first - start)
    phase.latency.append(end - start)


async def run_phase(args: argparse.Namespace, n_clients: int) -> Phase:
    phase = Phase(n_clients)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=n_clients + 4)
    timeout = httpx.Timeout(args.request_timeout, connect=10)

    async def client(http: httpx.AsyncClient, c: int) -> None:
        for i in range(args.requests):
            await one_request(http, args, c, i, phase)

    async with httpx.AsyncClient(
        base_url=args.url, headers=headers, limits=limits, timeout=timeout, trust_env=False
    ) as http:
        start = time.perf_counter()
        tasks = [asyncio.ensure_future(client(http, c)) for c in range(n_clients)]
        done, pending = await asyncio.wait(tasks, timeout=args.deadline)
        for task in pending:
            task.cancel()
        if pending:
            phase.errors.append(f"{len(pending)} clients still running after {args.deadline}s")
        phase.wall = time.perf_counter() - start
    return phase


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def report(phases: list[Phase], label: str) -> None:
    print(f"\n{label}")
    print(system_info())
    print(
        "| clients | requests | errors | generated tokens | wall s | gen tok/s "
        "| TTFT p50 ms | TTFT p95 ms | latency p50 s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in phases:
        print(
            f"| {p.clients} | {p.requests} | {len(p.errors)} | {p.tokens} | {p.wall:.1f} "
            f"| {p.tokens / p.wall:.1f} | {1000 * pct(p.ttft, 50):.0f} "
            f"| {1000 * pct(p.ttft, 95):.0f} | {pct(p.latency, 50):.2f} |"
        )
    for p in phases:
        for e in p.errors[:5]:
            print(f"  error ({p.clients} clients): {e}", file=sys.stderr)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(args: argparse.Namespace, which: str) -> tuple[subprocess.Popen[bytes], str, str]:
    """Start ``rllm serve`` (``which == "rllm"``) or llama-server on a free loopback port with
    the same model, slots, context and threads; return it once /health answers 200."""
    log = tempfile.NamedTemporaryFile(prefix=f"{which}-serve-", suffix=".log", delete=False)
    port = free_port()
    if which == "rllm":
        cmd = [sys.executable, "-m", "rllm.server", "-m", args.serve, "--max-queue", "256"]
    else:
        cmd = [args.llama_server, "-m", args.serve]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--parallel", str(args.parallel)]
    if args.ctx_size:
        cmd += ["-c", str(args.ctx_size)]
    if args.threads:
        cmd += ["-t", str(args.threads)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    with httpx.Client(trust_env=False, timeout=5) as http:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if http.get(f"{url}/health").status_code == 200:
                    return proc, url, log.name
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    stop_server(proc)
    sys.exit(f"{which} server did not start; see {log.name}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_phases(args: argparse.Namespace) -> list[Phase]:
    phases = []
    for n in (int(c) for c in args.clients.split(",")):
        phase = asyncio.run(run_phase(args, n))
        phases.append(phase)
        print(
            f"{n} clients: {phase.requests} requests, {len(phase.errors)} errors, "
            f"{phase.tokens / phase.wall:.1f} tok/s",
            file=sys.stderr,
        )
    return phases


def side_by_side(args: argparse.Namespace) -> list[Phase]:
    """Alternate the two servers for ``--rounds`` rounds (each started fresh, alone on the
    machine), then print medians per client count with the ratio rllm / llama-server."""
    runs: dict[str, list[list[Phase]]] = {"rllm": [], "llama-server": []}
    for r in range(args.rounds):
        order = ["rllm", "llama-server"] if r % 2 == 0 else ["llama-server", "rllm"]
        for which in order:
            proc, args.url, log = start_server(args, which)
            print(f"round {r + 1}: {which} at {args.url} (log: {log})", file=sys.stderr)
            try:
                runs[which].append(run_phases(args))
            finally:
                stop_server(proc)
    med = statistics.median
    print(
        f"\nrllm serve vs llama-server, {args.serve}: -np {args.parallel} -c {args.ctx_size}",
        end="",
    )
    print(f" -t {args.threads}, {args.max_tokens} tokens per request, medians of {args.rounds}")
    print(system_info())
    print(
        "| clients | rllm tok/s | llama-server tok/s | ratio | rllm TTFT p50 ms "
        "| llama-server TTFT p50 ms | ratio |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for i, n in enumerate(int(c) for c in args.clients.split(",")):
        tps = {w: med(rs[i].tokens / rs[i].wall for rs in runs[w]) for w in runs}
        ttft = {w: 1000 * med(pct(rs[i].ttft, 50) for rs in runs[w]) for w in runs}
        print(
            f"| {n} | {tps['rllm']:.1f} | {tps['llama-server']:.1f} "
            f"| {tps['rllm'] / tps['llama-server']:.2f} | {ttft['rllm']:.0f} "
            f"| {ttft['llama-server']:.0f} | {ttft['rllm'] / ttft['llama-server']:.2f} |"
        )
    return [ph for rs in runs.values() for phases in rs for ph in phases]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="base URL of a running server, e.g. http://127.0.0.1:8080")
    target.add_argument("--serve", metavar="MODEL", help="start `rllm serve -m MODEL` and test it")
    p.add_argument("--parallel", type=int, default=4, help="--parallel for --serve (4)")
    p.add_argument("-c", "--ctx-size", type=int, default=2048, help="-c for --serve (2048)")
    p.add_argument("-t", "--threads", type=int, default=None, help="-t for --serve")
    p.add_argument("--api-key", default=os.environ.get("LOAD_API_KEY"), help="bearer key")
    p.add_argument("--model", default="default", help="model name sent in requests")
    p.add_argument("--clients", default="1,4,32", help="client counts, one phase each (1,4,32)")
    p.add_argument("--requests", type=int, default=4, help="requests per client (4)")
    p.add_argument("--max-tokens", type=int, default=32, help="tokens per request (32)")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--request-timeout", type=float, default=300.0, help="seconds (300)")
    p.add_argument("--deadline", type=float, default=900.0, help="seconds per phase (900)")
    p.add_argument("--label", default=None, help="title of the table")
    p.add_argument(
        "--llama-server", metavar="PATH", help="with --serve: also run llama-server, side by side"
    )
    p.add_argument("--rounds", type=int, default=1, help="A/B rounds with --llama-server (1)")
    args = p.parse_args()

    if args.llama_server:
        if not args.serve:
            p.error("--llama-server needs --serve MODEL")
        phases = side_by_side(args)
        return 1 if any(ph.errors for ph in phases) else 0
    proc = None
    if args.serve:
        proc, args.url, log = start_server(args, "rllm")
        print(f"started rllm serve at {args.url} (log: {log})", file=sys.stderr)
    loopback_only(args.url)
    args.url = args.url.rstrip("/").removesuffix("/v1")
    try:
        phases = run_phases(args)
    finally:
        if proc is not None:
            stop_server(proc)
    report(phases, args.label or f"{args.url} ({args.max_tokens} tokens per request)")
    return 1 if any(ph.errors for ph in phases) else 0


if __name__ == "__main__":
    sys.exit(main())
