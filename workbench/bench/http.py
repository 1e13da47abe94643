"""`bench http`: requests/s and latency of the sign-in page and /healthz against a bare ASGI floor.

One Daphne serves all three paths (see bench/asgi.py), so the floor is what Daphne itself costs
on this machine and `healthz_vs_floor` is the share of it our stack leaves. The load is N
keep-alive connections, each sending one request after another for a fixed time. The client
speaks HTTP/1.1 on plain asyncio streams: httpx's async client topped out near 350 req/s on a
full core here, so it, not Daphne, set the floor; this one serves 2,000+ on a fifth of a core.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

from django.conf import settings

from workbench.bench.common import (
    CpuMeter,
    bench_database,
    bench_prefix,
    daphne,
    forget_redis_prefix,
    load_average,
    ms,
    percentile,
    table,
)

ENDPOINTS = (("floor", "/floor"), ("healthz", "/healthz"), ("login", "/accounts/login/"))


@dataclass(frozen=True)
class HttpScale:
    connections: int
    seconds: float
    warmup_seconds: float


SCALES = {
    "small": HttpScale(connections=8, seconds=2.0, warmup_seconds=0.5),
    "full": HttpScale(connections=32, seconds=15.0, warmup_seconds=3.0),
}


@dataclass
class Load:
    latencies: list[float]
    errors: int
    seconds: float
    client_cpu_pct: float = 0.0
    server_cpu_pct: float = 0.0
    first_error: str = ""


def run(*, scale: str) -> tuple[dict, str]:
    """Serve the bench database from one Daphne and load each endpoint in turn; figures, table."""
    size = SCALES[scale]
    prefix = bench_prefix()
    load_before = load_average()
    try:
        with (
            bench_database() as database_url,
            daphne(database_url=database_url, env={"WORKBENCH_REDIS_PREFIX": prefix}) as server,
        ):
            loads = {}
            for name, path in ENDPOINTS:
                asyncio.run(load(server.port, path, size.connections, size.warmup_seconds))
                with CpuMeter(server) as cpu:
                    result = asyncio.run(load(server.port, path, size.connections, size.seconds))
                result.client_cpu_pct, result.server_cpu_pct = cpu.client_pct, cpu.server_pct
                loads[name] = result
    finally:
        forget_redis_prefix(prefix)
    figures = {"scale": scale, "connections": size.connections, "seconds": size.seconds,
               "debug": settings.DEBUG, "load_before": load_before,
               "load_after": load_average()}  # fmt: skip
    for name, result in loads.items():
        ordered = sorted(result.latencies)
        figures |= {
            f"{name}_requests": len(ordered),
            f"{name}_errors": result.errors,
            f"{name}_rps": round(len(ordered) / result.seconds, 1),
            f"{name}_p50_ms": ms(percentile(ordered, 50)),
            f"{name}_p95_ms": ms(percentile(ordered, 95)),
            f"{name}_p99_ms": ms(percentile(ordered, 99)),
        }
    floor_rps = figures["floor_rps"] or 1.0
    figures["healthz_vs_floor"] = round(figures["healthz_rps"] / floor_rps, 3)
    figures["login_vs_floor"] = round(figures["login_rps"] / floor_rps, 3)
    return figures, render(figures, loads, size)


def render(figures: dict, loads: dict[str, Load], size: HttpScale) -> str:
    rows = [
        [name, path, figures[f"{name}_requests"], figures[f"{name}_errors"],
         figures[f"{name}_rps"], figures[f"{name}_p50_ms"], figures[f"{name}_p95_ms"],
         figures[f"{name}_p99_ms"], round(figures[f"{name}_rps"] / (figures["floor_rps"] or 1), 3),
         loads[name].server_cpu_pct, loads[name].client_cpu_pct]
        for name, path in ENDPOINTS
    ]  # fmt: skip
    headers = ["endpoint", "path", "requests", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms",
               "vs floor", "daphne cpu%", "client cpu%"]  # fmt: skip
    title = (
        f"bench http: one Daphne on 127.0.0.1, {size.connections} keep-alive connections, "
        f"{size.seconds:g}s per endpoint after {size.warmup_seconds:g}s warm-up\n"
        f"(DEBUG={settings.DEBUG}; load average before → after: {figures['load_before']:.2f}"
        f" → {figures['load_after']:.2f}, on {os.cpu_count()} cores)"
    )
    lines = [title, "", table(headers, rows)]
    for name, _path in ENDPOINTS:
        if figures[f"{name}_errors"]:
            lines.append(
                f"\n{name}: {figures[f'{name}_errors']} of {figures[f'{name}_requests']} answers "
                f"were not 200; the first: {loads[name].first_error}"
            )
    return "\n".join(lines)


async def load(port: int, path: str, connections: int, seconds: float) -> Load:
    """`connections` clients, each sending GET `path` back to back for `seconds`."""
    result = Load(latencies=[], errors=0, seconds=seconds)
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "User-Agent: workbench-bench\r\nAccept: text/html,application/json\r\n\r\n"
    ).encode()
    started = time.perf_counter()
    deadline = started + seconds

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                sent_at = time.perf_counter()
                writer.write(request)
                status, keep_alive, body = await read_response(reader)
                result.latencies.append(time.perf_counter() - sent_at)
                if status != 200:
                    result.errors += 1
                    # One sample says why (/healthz names the check that failed).
                    sample = f"{status} {body[:400].decode(errors='replace')}"
                    result.first_error = result.first_error or sample
                if not keep_alive:
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    result.seconds = time.perf_counter() - started
    return result


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool, bytes]:
    """One HTTP/1.1 response (by length, chunked, or up to the close): status, keep-alive, body."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = {}
    for line in header_lines:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip().lower()
    keep_alive = headers.get("connection") != "close"
    body = b""
    if "chunked" in headers.get("transfer-encoding", ""):
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            body += (await reader.readexactly(size + 2))[:size]  # the chunk, then its CRLF
            if size == 0:
                break
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        body = await reader.read()  # no length: the body ends when the server closes
        keep_alive = False
    return status, keep_alive, body
