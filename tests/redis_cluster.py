"""pytest plugin: a real Redis Cluster for the tests (3 primaries, no replicas).

Load it with ``pytest_plugins = [..., "redis_cluster"]`` in
``tests/conftest.py`` (or ``-p redis_cluster`` with ``tests/`` on
``sys.path``).

* ``redis_cluster`` (session): three ``redis-server --cluster-enabled yes``
  processes on free loopback ports (each also needs its cluster bus port,
  port + 10000, free), joined with ``redis-cli --cluster create ...
  --cluster-replicas 0 --cluster-yes``, ready once every node reports
  ``cluster_state:ok``; stopped at the end of the session.  Nothing on disk
  but the nodes' cluster config files in a temporary directory.
* :meth:`RedisClusterServers.client`: a new ``redis.asyncio.cluster.RedisCluster``
  on it (the caller closes it).

Where ``redis-server`` or ``redis-cli`` is missing, or the cluster does not
form, the tests that need it skip with the reason -- or fail under
``SMARTCHAT_REQUIRE_SERVERS=1`` (CI).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from redis_server import server_unavailable

if TYPE_CHECKING:
    from redis.asyncio.cluster import RedisCluster

__all__ = ["RedisClusterServers"]

NODES = 3
_START_TIMEOUT = 20.0
_READY_TIMEOUT = 30.0


class ClusterError(RuntimeError):
    pass


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_port() -> int:
    """A free loopback port whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port + 10000 <= 65535 and _bindable(port + 10000):
            return port
    raise ClusterError("no free loopback port with a free cluster bus port")


def _command(port: int, *args: str, timeout: float = 1.0) -> str:
    """One RESP command over a raw socket; the reply as text ('' on error)."""
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.sendall(b"".join(parts))
            reply = b""
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                reply += chunk
                if reply.startswith((b"+", b"-", b":")) and reply.endswith(b"\r\n"):
                    break
                if reply.startswith(b"$"):
                    header, _, rest = reply.partition(b"\r\n")
                    if len(rest) >= int(header[1:]) + 2:
                        break
            return reply.decode(errors="replace")
    except OSError:
        return ""


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class RedisClusterServers:
    """Three cluster-enabled ``redis-server`` processes on 127.0.0.1."""

    def __init__(self, server: str, cli: str, workdir: Path) -> None:
        self.server = server
        self.cli = cli
        self.workdir = workdir
        self.ports: list[int] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """``redis://`` URL of the first node (a cluster client discovers the rest)."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> None:
        for _ in range(NODES):
            self._start_node()
        addresses = [f"127.0.0.1:{port}" for port in self.ports]
        created = subprocess.run(
            [self.cli, "--cluster", "create", *addresses, "--cluster-replicas", "0",
             "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if created.returncode != 0:
            raise ClusterError(
                f"redis-cli --cluster create failed ({created.returncode}): "
                f"{(created.stdout + created.stderr)[-2000:]}"
            )
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            if all("cluster_state:ok" in _command(p, "CLUSTER", "INFO") for p in self.ports):
                return
            time.sleep(0.05)
        raise ClusterError("the cluster did not reach cluster_state:ok")

    def _start_node(self) -> None:
        error = ""
        for _ in range(3):
            port = _cluster_port()
            log = self.workdir / f"node-{port}.log"
            with log.open("ab") as out:
                process = subprocess.Popen(
                    [self.server, "--port", str(port), "--bind", "127.0.0.1",
                     "--cluster-enabled", "yes",
                     "--cluster-config-file", str(self.workdir / f"nodes-{port}.conf"),
                     "--cluster-node-timeout", "5000",
                     "--save", "", "--appendonly", "no", "--daemonize", "no",
                     "--dir", str(self.workdir)],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                )  # fmt: skip
            deadline = time.monotonic() + _START_TIMEOUT
            while time.monotonic() < deadline and process.poll() is None:
                if _command(port, "PING", timeout=0.5).startswith("+PONG"):
                    self.ports.append(port)
                    self.processes.append(process)
                    return
                time.sleep(0.02)
            _stop(process)
            error = log.read_text(errors="replace")[-2000:]
        raise ClusterError(f"a cluster node did not start: {error.strip()}")

    def stop(self) -> None:
        processes, self.processes = self.processes, []
        for process in processes:
            _stop(process)

    def client(self, **options: Any) -> RedisCluster:
        """A new asyncio cluster client (the caller closes it)."""
        from redis.asyncio.cluster import RedisCluster

        options.setdefault("socket_timeout", 10)
        options.setdefault("socket_connect_timeout", 5)
        return RedisCluster(host="127.0.0.1", port=self.ports[0], **options)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A 3-node Redis Cluster for the session (see the module docstring)."""
    server = shutil.which("redis-server")
    cli = shutil.which("redis-cli")
    if server is None or cli is None:
        server_unavailable(
            "redis-server and redis-cli are needed for Redis Cluster tests "
            "(apt-get install -y redis-server redis-tools)"
        )
    cluster = RedisClusterServers(server, cli, tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
    except (ClusterError, OSError, subprocess.SubprocessError) as exc:
        cluster.stop()
        server_unavailable(f"could not start a Redis Cluster: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()
