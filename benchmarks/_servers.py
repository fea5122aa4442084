"""Servers for the benchmarks: a ``redis-server`` and a SecantusDB wire server,
each on a free loopback port, started and stopped by the benchmark itself.

The logic is the one of ``tests/redis_server.py`` and ``tests/mongo_server.py``
(copied small, so the benchmarks need neither pytest nor the tests package):
nothing is persisted (``--save "" --appendonly no``; ``--storage-path
:memory:``), everything listens on 127.0.0.1 only, and a server that does not
answer within its deadline is an error with the tail of its log.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "RedisProcess",
    "SecantusProcess",
    "ServerError",
    "free_port",
    "redis_server",
    "secantus",
]


class ServerError(RuntimeError):
    """A server could not be started."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _redis_ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


class RedisProcess:
    """A ``redis-server`` on 127.0.0.1 (empty, nothing on disk)."""

    def __init__(self, workdir: Path, *extra: str, start_timeout: float = 15.0) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise ServerError("redis-server is not installed (apt-get install redis-server)")
        self.executable = executable
        self.workdir = workdir
        self.extra = extra
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        error = ""
        for _ in range(3):
            port = free_port()
            log = workdir / f"redis-{port}.log"
            with log.open("ab") as out:
                process = subprocess.Popen(
                    [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--daemonize", "no", "--dir", str(workdir), *extra],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                )  # fmt: skip
            deadline = time.monotonic() + start_timeout
            while time.monotonic() < deadline and process.poll() is None:
                if _redis_ping(port):
                    self.process, self.port = process, port
                    return
                time.sleep(0.02)
            _stop(process)
            error = log.read_text(errors="replace")[-2000:]
        raise ServerError(f"redis-server did not start on 127.0.0.1: {error.strip()}")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def version(self) -> str:
        out = subprocess.run(
            [self.executable, "--version"], capture_output=True, text=True, check=False
        ).stdout
        for part in out.split():
            if part.startswith("v="):
                return part[2:]
        return out.strip()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            _stop(process)


class SecantusProcess:
    """A SecantusDB (MongoDB wire protocol) server on 127.0.0.1, in memory."""

    def __init__(self, start_timeout: float = 60.0) -> None:
        try:
            import pymongo  # noqa: F401
            import secantus  # noqa: F401
        except ImportError as exc:
            raise ServerError(f"SecantusDB/pymongo not installed ({exc})") from exc
        self.port = free_port()
        self.url = f"mongodb://127.0.0.1:{self.port}/?directConnection=true"
        self._workdir = tempfile.mkdtemp(prefix="smartchat-bench-secantus-")
        self._log_path = os.path.join(self._workdir, "secantus.log")
        self._log = open(self._log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(self.port),
             "--storage-path", ":memory:", "--log-level", "WARNING"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self._workdir,
        )  # fmt: skip
        error = self._wait_ready(start_timeout)
        if error is not None:
            self.stop()
            raise ServerError(error)

    def _log_tail(self, chars: int = 2000) -> str:
        try:
            with open(self._log_path, "rb") as log:
                return log.read().decode(errors="replace")[-chars:]
        except OSError:
            return ""

    def _wait_ready(self, timeout: float) -> str | None:
        import pymongo

        deadline = time.monotonic() + timeout
        error = "not started"
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return f"secantus exited with {self.process.returncode}: {self._log_tail()}"
            client: Any = pymongo.MongoClient(
                self.url, serverSelectionTimeoutMS=500, connectTimeoutMS=1000
            )
            try:
                client.admin.command("ping")
                return None
            except Exception as exc:  # any driver error means "not yet"
                error = f"{type(exc).__name__}: {exc}"
            finally:
                client.close()
            time.sleep(0.1)
        return f"secantus did not answer ping within {timeout:.0f} s ({error})"

    def version(self) -> str:
        from importlib.metadata import version

        return version("secantusdb")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            _stop(process)
            self._log.close()
            shutil.rmtree(self._workdir, ignore_errors=True)


@contextlib.contextmanager
def redis_server() -> Iterator[RedisProcess]:
    workdir = Path(tempfile.mkdtemp(prefix="smartchat-bench-redis-"))
    server = RedisProcess(workdir)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def secantus() -> Iterator[SecantusProcess]:
    server = SecantusProcess()
    try:
        yield server
    finally:
        server.stop()
