"""`bench realtime`: delivery latency and loss of live updates to many signed-in sockets.

Signed-in CCOs hold websockets to the hub subscribed to the `console` group; the bench process
publishes `console.sign_ins` through `realtime.publish`, paced, and each client notes when the
frame `<!--wb:console:SEQ-->` arrives. The floor is the same number of sockets on the same
Daphne and channel layer receiving a raw `group_send` of HTML of the same size (bench/asgi.py),
so the gap between the two is what the hub adds (permissions, rendering per user, the counter).

Each channel layer is measured in its own process: settings read CHANNEL_LAYER and the Redis
prefix once, at import, so the command re-runs itself with both in the environment (the
Daphne child inherits them) instead of patching settings after the fact.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.management.base import CommandError
from django.db import connections
from django.test import Client
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from workbench import console, realtime, roles
from workbench.bench.asgi import FLOOR_EVENT, FLOOR_GROUP, FLOOR_LABEL, FLOOR_WS_PATH
from workbench.bench.common import (
    BENCH_PREFIX,
    CpuMeter,
    Server,
    bench_database,
    bench_prefix,
    daphne,
    forget_redis_prefix,
    load_average,
    ms,
    percentile,
    raise_open_file_limit,
    stop_process,
    table,
)
from workbench.models import User

LAYERS = ("pubsub", "core")
HUB_GROUP_KIND = "console"
HUB_EVENT = "console.sign_ins"
# The backend a real sign-in stores in the session (axes and rules authenticate nobody).
SESSION_BACKEND = "django.contrib.auth.backends.ModelBackend"
# Opening a thousand sockets at once overflows Daphne's listen backlog (SYN retries of 1 s+).
CONNECT_CONCURRENCY = 50
WARMUP_TIMEOUT_S = 30
# A late delivery is late, not lost: keep waiting while frames still arrive.
DRAIN_QUIET_S = 5.0
DRAIN_MAX_S = 300.0
TARGET_P95_MS = 300
REFUSED = {4401, 4403}  # the hub's close codes for a session or group it does not accept
CHILD_STOP_TIMEOUT_S = 60
FRAME = re.compile(r"<!--wb:([^:]+):([0-9]+)-->")
PER_LAYER_KEYS = ("lost", "p50_ms", "p95_ms", "p99_ms", "floor_lost", "floor_p50_ms",
                  "floor_p95_ms", "cpu_daphne_pct", "floor_cpu_daphne_pct")  # fmt: skip


@dataclass(frozen=True)
class RealtimeScale:
    clients: int
    users: int  # the hub renders once per user and event, so this is the rendering load
    events: int
    rate_per_s: float


# Measured on the 2-core machine: one Daphne delivers roughly 1,000 to 2,500 frames/s to
# sockets in one group, so 20 events/s to 1,000 sockets is a burst the bench would only see
# pile up. Both scales offer about 1,000 deliveries a second; --rate changes it.
SCALES = {
    "small": RealtimeScale(clients=100, users=2, events=30, rate_per_s=10),
    "full": RealtimeScale(clients=1000, users=10, events=200, rate_per_s=1),
}


def is_isolated(layer: str) -> bool:
    """True when this process's settings were read with a bench Redis prefix and this layer."""
    return settings.REDIS_PREFIX.startswith(BENCH_PREFIX) and layer == settings.CHANNEL_LAYER


def run(*, scale: str, layers: list[str], rate_per_s: float | None) -> tuple[dict, str]:
    """Measure each layer (in this process when it is already isolated); figures, table."""
    size = SCALES[scale]
    if rate_per_s is not None:
        size = RealtimeScale(size.clients, size.users, size.events, rate_per_s)
    if len(layers) == 1 and is_isolated(layers[0]):
        results = {layers[0]: run_layer(layers[0], size)}
    else:
        results, failed = {}, {}
        for layer in layers:
            # One layer failing (after minutes) must not throw away the other's figures.
            try:
                results[layer] = run_layer_in_child(layer, scale, size.rate_per_s)
            except CommandError as exc:
                failed[layer] = str(exc)
        if not results:
            raise CommandError("; ".join(failed.values()))
        if failed:
            return failed_figures(results, failed, scale, size)
    default = settings.CHANNEL_LAYER if settings.CHANNEL_LAYER in results else layers[0]
    figures = {**results[default], "scale": scale, "layer": default, "layers": list(results)}
    for layer, result in results.items():
        figures |= {f"{layer}_{key}": result[key] for key in PER_LAYER_KEYS}
    figures["by_layer"] = results
    return figures, render(results, size)


def failed_figures(
    results: dict[str, dict], failed: dict[str, str], scale: str, size: RealtimeScale
) -> tuple[dict, str]:
    """What the layers that ran measured, and why the others did not (`failed`, by layer)."""
    figures = {"scale": scale, "layers": list(results), "failed": failed, "by_layer": results}
    for layer, result in results.items():
        figures |= {f"{layer}_{key}": result[key] for key in PER_LAYER_KEYS}
    why = [f"{layer}: the run failed: {reason}" for layer, reason in failed.items()]
    return figures, "\n".join([render(results, size), "", *why])


def run_layer_in_child(layer: str, scale: str, rate_per_s: float) -> dict:
    """`manage.py bench realtime --layer LAYER` with that layer and a bench prefix in its env."""
    argv = [sys.executable, str(settings.BASE_DIR / "manage.py"), "bench", "realtime",
            "--layer", layer, "--scale", scale, "--rate", str(rate_per_s), "--json"]  # fmt: skip
    env = {**os.environ, "CHANNEL_LAYER": layer, "WORKBENCH_REDIS_PREFIX": bench_prefix(layer)}
    # Its own session, stopped with SIGTERM (which it turns into a clean exit that drops its
    # database) when this process is interrupted; its stderr passes straight through.
    child = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True,
                             start_new_session=True)  # fmt: skip
    try:
        stdout, _ = child.communicate()
    finally:
        if child.poll() is None:
            # Time to stop its Daphne and drop its database before it is killed.
            stop_process(child, timeout_s=CHILD_STOP_TIMEOUT_S)
    if child.returncode != 0:
        raise CommandError(f"the {layer} layer run failed (exit code {child.returncode})")
    lines = stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])["by_layer"][layer]
    except (IndexError, ValueError, KeyError) as exc:
        raise CommandError(f"the {layer} layer run printed no figures:\n{stdout[-2000:]}") from exc


def run_layer(layer: str, size: RealtimeScale) -> dict:
    """Both phases (floor, hub) on one Daphne serving a fresh bench database."""
    # Each client socket is a file here and one more in Daphne (which inherits the limit).
    raise_open_file_limit(2 * size.clients + 512)
    prefix = settings.REDIS_PREFIX
    env = {"CHANNEL_LAYER": layer, "WORKBENCH_REDIS_PREFIX": prefix}
    load_before = load_average()
    try:
        with bench_database() as database_url:
            session_keys, fragment_html = sign_in_cco_users(size.users)
            with daphne(database_url=database_url, env=env) as server:
                floor = asyncio.run(
                    measure(server, FloorFeed(fragment_html), session_keys=[], size=size)
                )
                hub = asyncio.run(measure(server, HubFeed(), session_keys=session_keys, size=size))
    finally:
        forget_redis_prefix(prefix)
    figures = {"layer": layer, "clients": size.clients, "users": size.users,
               "events": size.events, "rate_per_s": size.rate_per_s, "load_before": load_before,
               "load_after": load_average(),
               "fragment_bytes": len(fragment_html.encode())}  # fmt: skip
    figures |= hub.figures("")
    figures |= floor.figures("floor_")
    return figures


def sign_in_cco_users(count: int) -> tuple[list[str], str]:
    """`count` CCOs signed in the way a browser's sign-in leaves them; their session keys and
    the console fragment as the first of them sees it (the floor sends HTML of that size)."""
    cco = Group.objects.get(name=roles.CCO)
    keys = []
    users = []
    for number in range(1, count + 1):
        user = User.objects.create_user(username=f"bench-cco-{number:03d}", first_name="Bench",
                                        last_name=f"CCO {number}")  # fmt: skip
        user.groups.add(cco)
        client = Client()
        # Sends user_logged_in like a real sign-in: an audit entry the console panel lists.
        client.force_login(user, backend=SESSION_BACKEND)
        keys.append(client.cookies[settings.SESSION_COOKIE_NAME].value)
        users.append(user)
    return keys, console.render_sign_ins(users[0])


class HubFeed:
    """Events through the product's path: realtime.publish → the hub renders per user."""

    label = HUB_GROUP_KIND
    path = f"/ws/hub/?group={HUB_GROUP_KIND}"

    def __init__(self) -> None:
        self.group = realtime.group_name(HUB_GROUP_KIND)

    def last_seq(self) -> int:
        return realtime.current_seq(self.group)

    def publish(self, seq: int) -> None:
        # The hub numbers events itself, with a Redis counter under this run's own prefix where
        # nothing else publishes, so this event is number `seq`; checked after the run.
        realtime.publish(self.group, HUB_EVENT)


class FloorFeed:
    """Events as a raw group_send of ready HTML to the bench's floor consumer."""

    label = FLOOR_LABEL
    path = FLOOR_WS_PATH

    def __init__(self, html: str) -> None:
        self.html = html
        self.seq = 0

    def last_seq(self) -> int:
        return self.seq

    def publish(self, seq: int) -> None:
        self.seq = seq
        message = {"type": FLOOR_EVENT, "seq": seq, "html": self.html}
        async_to_sync(get_channel_layer().group_send)(FLOOR_GROUP, message)


@dataclass
class Window:
    """Which sequence numbers count, and how many deliveries of them arrived so far."""

    base: int | None = None
    received: int = 0


@dataclass
class Phase:
    clients: int
    events: int
    latencies: list[float] = field(default_factory=list)
    duplicates: int = 0
    unseen: int = 0  # events no socket received: a whole event dropped, not a slow socket
    sockets_closed: int = 0  # by the server, before the bench closed them
    close_codes: list[int] = field(default_factory=list)
    connect_s: float = 0.0
    published_rate: float = 0.0
    cpu_daphne_pct: float = 0.0
    cpu_client_pct: float = 0.0

    def figures(self, prefix: str) -> dict:
        ordered = sorted(self.latencies)
        return {
            f"{prefix}received": len(ordered),
            f"{prefix}lost": self.clients * self.events - len(ordered),
            f"{prefix}duplicates": self.duplicates,
            f"{prefix}events_unseen": self.unseen,
            f"{prefix}sockets_closed": self.sockets_closed,
            f"{prefix}close_codes": self.close_codes,
            f"{prefix}p50_ms": ms(percentile(ordered, 50)),
            f"{prefix}p95_ms": ms(percentile(ordered, 95)),
            f"{prefix}p99_ms": ms(percentile(ordered, 99)),
            f"{prefix}max_ms": ms(ordered[-1] if ordered else 0.0),
            f"{prefix}connect_s": round(self.connect_s, 2),
            f"{prefix}published_per_s": round(self.published_rate, 1),
            f"{prefix}cpu_daphne_pct": self.cpu_daphne_pct,
            f"{prefix}cpu_client_pct": self.cpu_client_pct,
        }


async def measure(
    server: Server, feed: HubFeed | FloorFeed, *, session_keys: list[str], size: RealtimeScale
) -> Phase:
    """Open the sockets, wait until each hears an event, then publish paced and collect."""
    phase = Phase(clients=size.clients, events=size.events)
    started = time.perf_counter()
    sockets = await open_sockets(server, feed.path, session_keys, size.clients)
    phase.connect_s = time.perf_counter() - started
    window = Window()
    inboxes: list[list[tuple[int, float]]] = [[] for _ in sockets]
    readers = [
        asyncio.create_task(read_frames(ws, feed.label, inbox, window))
        for ws, inbox in zip(sockets, inboxes, strict=True)
    ]
    try:
        await warm_up(feed, sockets, inboxes)
        window.base = await asyncio.to_thread(feed.last_seq)
        expected = size.clients * size.events
        with CpuMeter(server) as cpu:
            sent_at = await asyncio.to_thread(
                publish_paced, feed, first_seq=window.base + 1, events=size.events,
                rate_per_s=size.rate_per_s,
            )  # fmt: skip
            await drain(window, expected)
        phase.cpu_daphne_pct, phase.cpu_client_pct = cpu.server_pct, cpu.client_pct
        dropped = [ws.close_code for ws in sockets if ws.close_code is not None]
        phase.sockets_closed = len(dropped)
        phase.close_codes = sorted({code for code in dropped if code is not None})
        last = await asyncio.to_thread(feed.last_seq)
        if last != window.base + size.events:
            raise CommandError(
                f"{feed.label}: expected the last event to be number {window.base + size.events},"
                f" it is {last}: something else publishes under this Redis prefix"
            )
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        await asyncio.gather(*readers, return_exceptions=True)
    times = sorted(sent_at.values())
    if len(times) > 1:
        phase.published_rate = (len(times) - 1) / (times[-1] - times[0])
    last_seq = window.base + size.events
    heard_of: set[int] = set()
    for inbox in inboxes:
        seen = set()
        for seq, at in inbox:
            if window.base < seq <= last_seq:
                if seq in seen:
                    phase.duplicates += 1
                    continue
                seen.add(seq)
                phase.latencies.append(at - sent_at[seq])
        heard_of |= seen
    phase.unseen = size.events - len(heard_of)
    return phase


async def open_sockets(
    server: Server, path: str, session_keys: list[str], count: int
) -> list[ClientConnection]:
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    url = f"ws://127.0.0.1:{server.port}{path}"

    async def open_one(number: int) -> ClientConnection:
        headers = {}
        if session_keys:  # several sockets per user, like one user with many tabs
            key = session_keys[number % len(session_keys)]
            headers["Cookie"] = f"{settings.SESSION_COOKIE_NAME}={key}"
        async with gate:
            return await connect(
                url, origin=Origin(server.origin), additional_headers=headers, compression=None,
                proxy=None, open_timeout=60, ping_interval=None, close_timeout=5,
                user_agent_header="workbench-bench",
            )  # fmt: skip

    opened = await asyncio.gather(*(open_one(n) for n in range(count)), return_exceptions=True)
    sockets = [ws for ws in opened if isinstance(ws, ClientConnection)]
    failures = [exc for exc in opened if isinstance(exc, BaseException)]
    if failures:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        raise CommandError(f"{len(failures)} of {count} websockets did not open: {failures[0]!r}")
    return sockets


async def read_frames(
    ws: ClientConnection, label: str, inbox: list[tuple[int, float]], window: Window
) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for frame in ws:
            at = time.perf_counter()
            match = FRAME.match(frame) if isinstance(frame, str) else None
            if match is None or match[1] != label:
                continue
            seq = int(match[2])
            inbox.append((seq, at))
            if window.base is not None and seq > window.base:
                window.received += 1


async def warm_up(
    feed: HubFeed | FloorFeed, sockets: list[ClientConnection], inboxes: list[list]
) -> None:
    """Publish until every socket has heard an event, then let the last one finish arriving.

    The hub joins its groups just after the handshake, so an open socket is not yet a
    subscribed one. The next warm-up event goes out only once the previous one stopped
    arriving, so the measured events never queue behind warm-up traffic.
    """
    deadline = time.monotonic() + WARMUP_TIMEOUT_S
    while True:
        seq = await asyncio.to_thread(feed.last_seq) + 1
        await asyncio.to_thread(publish_paced, feed, first_seq=seq, events=1, rate_per_s=1.0)
        await settle(inboxes)
        refused = [ws.close_code for ws in sockets if ws.close_code in REFUSED]
        if refused:
            raise CommandError(
                f"{len(refused)} of {len(sockets)} sockets to {feed.path} were refused (codes "
                f"{sorted(set(refused))}; 4401: session not accepted, 4403: group not allowed)"
            )
        # A socket the server dropped (1011: an error inside Daphne) is not waited for: the
        # events it misses count as lost, and the figures say how many sockets closed.
        pairs = zip(sockets, inboxes, strict=True)
        if all(inbox or ws.close_code is not None for ws, inbox in pairs):
            return
        if time.monotonic() > deadline:
            deaf = sum(1 for inbox in inboxes if not inbox)
            raise CommandError(f"{deaf} sockets heard no event within {WARMUP_TIMEOUT_S}s")


async def settle(inboxes: list[list], *, quiet_s: float = 0.3, most_s: float = 5.0) -> None:
    """Wait until no frame has arrived for `quiet_s` (at most `most_s`)."""
    stop = time.monotonic() + most_s
    count, quiet_since = -1, time.monotonic()
    while time.monotonic() < stop:
        await asyncio.sleep(0.05)
        now_count = sum(len(inbox) for inbox in inboxes)
        if now_count != count:
            count, quiet_since = now_count, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return


def publish_paced(
    feed: HubFeed | FloorFeed, *, first_seq: int, events: int, rate_per_s: float
) -> dict[int, float]:
    """Publish events first_seq, first_seq+1, … at `rate_per_s`, from a thread of its own (as a
    Celery worker or a request would); the time each publish call began, by number."""
    sent_at: dict[int, float] = {}
    try:
        started = time.perf_counter()
        for number in range(events):
            delay = started + number / rate_per_s - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            seq = first_seq + number
            sent_at[seq] = time.perf_counter()
            feed.publish(seq)
    finally:
        # publish() asks the database whether a transaction is open: close this thread's link.
        connections.close_all()
    return sent_at


async def drain(window: Window, expected: int) -> None:
    """Wait for the last deliveries: until all arrived, or nothing came for DRAIN_QUIET_S."""
    hard_stop = time.monotonic() + DRAIN_MAX_S
    seen, quiet_since = window.received, time.monotonic()
    while window.received < expected and time.monotonic() < hard_stop:
        await asyncio.sleep(0.05)
        if window.received != seen:
            seen, quiet_since = window.received, time.monotonic()
        elif time.monotonic() - quiet_since > DRAIN_QUIET_S:
            return


def render(results: dict[str, dict], size: RealtimeScale) -> str:
    rows = []
    for layer, r in results.items():
        for label, p in (("floor (raw group_send)", "floor_"), ("hub (console.sign_ins)", "")):
            rows.append([layer, label, r[f"{p}received"], r[f"{p}lost"], r[f"{p}p50_ms"],
                         r[f"{p}p95_ms"], r[f"{p}p99_ms"], r[f"{p}max_ms"],
                         r[f"{p}published_per_s"], r[f"{p}cpu_daphne_pct"],
                         r[f"{p}cpu_client_pct"], r[f"{p}connect_s"],
                         r[f"{p}sockets_closed"]])  # fmt: skip
    headers = ["layer", "path", "delivered", "lost", "p50 ms", "p95 ms", "p99 ms", "max ms",
               "sent/s", "daphne cpu%", "client cpu%", "connect s", "dropped"]  # fmt: skip
    loads = ", ".join(
        f"{layer} {r['load_before']:.2f} → {r['load_after']:.2f}" for layer, r in results.items()
    )
    title = (
        f"bench realtime: {size.clients} websockets ({size.users} signed-in CCOs) on one Daphne,"
        f" {size.events} events paced at {size.rate_per_s:g}/s, each to every socket\n"
        f"({size.clients * size.events:,} deliveries expected per row; DEBUG={settings.DEBUG};"
        f" load average before → after: {loads}, on {os.cpu_count()} cores)"
    )
    verdicts = [
        f"{layer}: {'meets' if r['lost'] == 0 and r['p95_ms'] <= TARGET_P95_MS else 'misses'} "
        f"the target (0 lost, p95 <= {TARGET_P95_MS} ms): lost {r['lost']} "
        f"({r['events_unseen']} events reached no socket), p95 {r['p95_ms']} ms"
        for layer, r in results.items()
    ]
    return "\n".join([title, "", table(headers, rows), "", *verdicts])
