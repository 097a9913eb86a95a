"""Aggregate generation speed of rllm under Ray Serve with 1 and 2 replicas (``--threads``
each, ``--parallel`` slots each), ``--clients`` concurrent streaming clients, on a local Ray
cluster bound to loopback; with plain ``rllm serve`` (one process, the same threads and slots)
as the reference for what Serve's proxy costs:

    python benches/ray_replicas.py -m SmolLM2-135M-Instruct.Q4_1.gguf --rounds 2

Each round runs every configuration once, in alternating order, so that drift on a shared
machine hits all of them; the table holds medians. Requests ask for exactly ``--max-tokens``
tokens (``ignore_eos``). Needs the ray extra: pip install 'rllm[ray]'.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import warnings

import httpx
from load_server import Phase, free_port, pct, run_phase, start_server, stop_server
from rllm.bench import system_info


def wait_ready(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, trust_env=False, timeout=30) as http:
        while time.monotonic() < deadline:
            try:
                if http.get("/health").status_code == 200:
                    http.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 1})
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    sys.exit(f"{url} did not get ready in {timeout}s")


def measure_ray(args: argparse.Namespace, replicas: int, port: int) -> Phase:
    import rllm.ray
    from ray import serve

    app = rllm.ray.app(
        {
            "model": args.model_path,
            "num_replicas": replicas,
            "threads": args.threads,
            "parallel": args.parallel,
            "ctx_size": args.ctx_size,
        }
    )
    serve.run(app, name="bench", route_prefix="/")
    args.url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(args.url)
        return asyncio.run(run_phase(args, args.clients))
    finally:
        serve.delete("bench")


def measure_plain(args: argparse.Namespace) -> Phase:
    args.serve = args.model_path
    proc, args.url, _ = start_server(args, "rllm")
    try:
        wait_ready(args.url)
        return asyncio.run(run_phase(args, args.clients))
    finally:
        stop_server(proc)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("-m", "--model", dest="model_path", required=True, help="GGUF file")
    p.add_argument("--replicas", default="1,2", help="replica counts to compare (1,2)")
    p.add_argument("-t", "--threads", type=int, default=1, help="threads per replica (1)")
    p.add_argument("--parallel", type=int, default=4, help="slots per replica (4)")
    p.add_argument("-c", "--ctx-size", type=int, default=2048, help="context per replica (2048)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (8)")
    p.add_argument("--requests", type=int, default=4, help="requests per client (4)")
    p.add_argument("--max-tokens", type=int, default=32, help="tokens per request (32)")
    p.add_argument("--rounds", type=int, default=2, help="rounds; the table holds medians (2)")
    p.add_argument("--no-plain", action="store_true", help="skip the plain rllm serve run")
    args = p.parse_args()
    args.model_path = os.path.abspath(args.model_path)
    # what load_server's run_phase reads
    args.api_key, args.model, args.temperature = None, "default", 0.8
    args.request_timeout, args.deadline = 300.0, 900.0

    counts = [int(n) for n in args.replicas.split(",")]
    configs = [f"ray x{n}" for n in counts] + ([] if args.no_plain else ["rllm serve"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import ray
        from ray import serve

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        num_cpus=max(counts) * args.threads,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    runs: dict[str, list[Phase]] = {c: [] for c in configs}
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for r in range(args.rounds):
            for config in configs if r % 2 == 0 else configs[::-1]:
                if config == "rllm serve":
                    phase = measure_plain(args)
                else:
                    phase = measure_ray(args, int(config.removeprefix("ray x")), port)
                runs[config].append(phase)
                print(
                    f"round {r + 1}, {config}: {phase.requests} requests, "
                    f"{len(phase.errors)} errors, {phase.tokens / phase.wall:.1f} tok/s",
                    file=sys.stderr,
                )
                for e in phase.errors[:3]:
                    print(f"  error: {e}", file=sys.stderr)
    finally:
        serve.shutdown()
        ray.shutdown()

    med = statistics.median
    base = med(ph.tokens / ph.wall for ph in runs[configs[0]])
    print(
        f"\n{os.path.basename(args.model_path)}: {args.threads} thread(s) and {args.parallel} "
        f"slots per replica, {args.clients} clients x {args.requests} requests x "
        f"{args.max_tokens} tokens, medians of {args.rounds} rounds"
    )
    print(system_info())
    print(f"| server | gen tok/s | vs {configs[0]} | TTFT p50 ms | latency p50 s | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for config, phases in runs.items():
        tps = med(ph.tokens / ph.wall for ph in phases)
        ttft = 1000 * med(pct(ph.ttft, 50) for ph in phases)
        lat = med(pct(ph.latency, 50) for ph in phases)
        errors = sum(len(ph.errors) for ph in phases)
        print(f"| {config} | {tps:.1f} | {tps / base:.2f} | {ttft:.0f} | {lat:.2f} | {errors} |")
    return 1 if any(ph.errors for phases in runs.values() for ph in phases) else 0


if __name__ == "__main__":
    sys.exit(main())
