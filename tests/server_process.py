"""Start ``python -m rllm.server`` as a subprocess on a free loopback port, for tests and
benches: waits until ``/health`` answers 200, and always stops the process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

_LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


class ServerProcess:
    """``with ServerProcess([...args], log_path) as server: server.url ...``"""

    def __init__(self, args: list[str], log_path: Path, timeout: float = 120.0) -> None:
        self.args = args
        self.log_path = log_path
        self.timeout = timeout
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def start(self) -> None:
        cmd = [sys.executable, "-m", "rllm.server", "--host", "127.0.0.1", "--port", "0"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("RLLM_API_KEY", None)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*cmd, *self.args], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + self.timeout
        while not self.url:
            found = _LISTENING.search(self.log())
            if found:
                self.url = found[1]
            elif self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{self.log()}")
            else:
                time.sleep(0.05)
        with httpx.Client(trust_env=False, timeout=5) as client:
            while True:
                try:
                    if client.get(f"{self.url}/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not get ready:\n{self.log()}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
