"""`bench ingest`: inbound messages pushed through the real webhook endpoints, end to end.

20,000 requests (full scale) from 1,000 distinct customers, spread over five doors: raw email
(`/inbound/email/raw/`, bearer secret), Messenger, Instagram and WhatsApp (`/inbound/meta/`,
X-Hub-Signature-256) and X direct messages (`/inbound/x/`, x-twitter-webhooks-signature). One in
five requests is a byte-for-byte repeat of an earlier one (a provider retrying), so 16,000 are
distinct. Each request is signed, then sent in-process through Django's test client (the whole
middleware stack and the one inbound pipeline: identity, dedupe, case routing, timeline,
publish after commit, with no HTTP server or socket in between). The senders are laid out as a
deployment runs its web servers: a few forked processes (two by default, one per core of the
2-core machine the target is set for, as the README runs Daphne) of a few threads each, every
thread with its own database connection, all taking the next request from one shared counter.
Measured: messages per second over the whole run, p50/p95 per request, the web processes' CPU
per message, and the inbound interactions stored, which must equal the distinct messages (else
the run fails).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import multiprocessing
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from email.utils import format_datetime

from django.conf import settings
from django.db import connection
from django.test import Client
from django.utils import timezone

from cases.models import BusinessCalendar, Case, Queue
from customers.models import Customer, Direction, Interaction
from workbench.bench.common import (
    bench_database,
    forget_redis_prefix,
    is_isolated,
    load_average,
    ms,
    percentile,
    run_forked,
    run_isolated,
    table,
)

TARGET_MESSAGES_PER_S = 300.0
DUPLICATE_SHARE = 0.2
DOORS = ("email", "facebook", "instagram", "whatsapp", "x")
META_SECRET = "bench-meta-app-secret"
X_SECRET = "bench-x-consumer-secret"
EMAIL_SECRET = "bench-inbound-email-secret"
OUR_X_ACCOUNT = "4337869213"
PAGE_ID = "107362905338213"
IG_ACCOUNT = "17841405822304914"
WA_NUMBER_ID = "106540352242922"
BODIES = (
    "Hello, my order has not arrived yet and the tracking page says it left the depot.",
    "Thanks for getting back to me so quickly, the replacement works fine now.",
    "Could you tell me when the refund will show on my card? It has been ten days.",
    "I would like to change the delivery address on my subscription to my office.",
)


PUSH_TIMEOUT_S = 1800


@dataclass(frozen=True)
class IngestScale:
    sent: int
    customers: int
    processes: int  # web server processes, each as a Daphne worker with its own threads
    threads: int


SCALES = {
    "small": IngestScale(sent=1_000, customers=100, processes=2, threads=2),
    "full": IngestScale(sent=20_000, customers=1_000, processes=2, threads=2),
}


@dataclass(frozen=True)
class Request:
    path: str
    body: bytes
    content_type: str
    headers: dict


def run(
    *, scale: str, processes: int | None = None, threads: int | None = None
) -> tuple[dict, str]:
    size = SCALES[scale]
    size = replace(size, processes=processes or size.processes, threads=threads or size.threads)
    if is_isolated():
        figures = measure(size, scale)
    else:
        extra = ["--processes", str(size.processes), "--threads", str(size.threads)]
        figures = run_isolated("ingest", scale, extra)
    return figures, render(figures)


def measure(size: IngestScale, scale: str) -> dict:
    prefix = settings.REDIS_PREFIX
    figures: dict = {"scale": scale, "debug": settings.DEBUG, "processes": size.processes,
                     "threads": size.threads, "load_before": load_average()}  # fmt: skip
    settings.META_APP_SECRET, settings.X_CONSUMER_SECRET = META_SECRET, X_SECRET
    settings.INBOUND_EMAIL_SECRET = EMAIL_SECRET
    try:
        with bench_database():
            calendar = BusinessCalendar.objects.create(name="Bench", timezone="UTC")
            Queue.objects.create(name="Inbound", calendar=calendar)
            requests, distinct = build_requests(size)
            figures |= {"sent": len(requests), "distinct": distinct, "customers": size.customers}
            figures |= push(requests, size.processes, size.threads)
            stored = Interaction.objects.filter(direction=Direction.INBOUND)
            figures["stored"] = stored.count()
            figures["stored_by_channel"] = dict(
                Counter(stored.values_list("channel", flat=True).iterator())
            )
            figures["customers_stored"] = Customer.objects.count()
            figures["cases"] = Case.objects.count()
    finally:
        forget_redis_prefix(prefix)
    figures["load_after"] = load_average()
    failed = []
    if figures["stored"] != figures["distinct"]:
        failed.append("stored")
    if figures["refused"]:
        failed.append("refused")
    if failed:
        figures["failed"] = failed
    return figures


def build_requests(size: IngestScale) -> tuple[list[Request], int]:
    """The signed requests in sending order, and how many distinct messages they carry.

    Customer k always writes through door k % 5; message n of the run is a new message
    unless it is one of the repeats, which copy an earlier request exactly.
    """
    rng = random.Random(4)
    distinct = size.sent - int(size.sent * DUPLICATE_SHARE)
    originals = [_request(n, n % size.customers) for n in range(distinct)]
    requests = list(originals)
    for _ in range(size.sent - distinct):
        at = rng.randrange(1, len(requests) + 1)
        requests.insert(at, originals[rng.randrange(0, min(at, distinct))])
    return requests, distinct


def push(requests: list[Request], processes: int, threads: int) -> dict:
    """Send every request from `processes` forked processes of `threads` threads each, taking
    the next request in sending order from one shared counter (as a load balancer hands them
    to the web server's workers); timings and the statuses seen."""
    next_index = multiprocessing.get_context("fork").Value("l", 0)
    reports, started = run_forked(
        push_worker,
        [(requests, threads, next_index)] * processes,
        what="an ingest worker",
        timeout_s=PUSH_TIMEOUT_S,
    )
    wall = max(report["finished_at"] for report in reports) - started
    timings = [elapsed for report in reports for elapsed in report["timings"]]
    statuses = sum((Counter(report["statuses"]) for report in reports), Counter())
    refused = sum(count for status, count in statuses.items() if status >= 300)
    return {
        "wall_s": round(wall, 2),
        "messages_per_s": round(len(timings) / wall, 1),
        "p50_ms": ms(percentile(timings, 50)),
        "p95_ms": ms(percentile(timings, 95)),
        "cpu_ms_per_message": round(
            1000 * sum(report["cpu_s"] for report in reports) / max(len(timings), 1), 2
        ),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "refused": refused,
        "errors": [error for report in reports for error in report["refusals"]][:5],
    }


def push_worker(requests: list[Request], threads: int, next_index, start, results) -> None:
    """One web server process: `threads` threads, each with its own database connection,
    posting the next unsent request until none is left; reports to `results` once."""
    hosts = [host for host in settings.ALLOWED_HOSTS if host not in ("*", "") and host[0] != "."]
    host = hosts[0] if hosts else "localhost"
    lock = threading.Lock()
    timings: list[float] = []
    statuses: Counter = Counter()
    refusals: list[str] = []

    def take() -> Request | None:
        with next_index.get_lock():
            index = next_index.value
            next_index.value = index + 1
        return requests[index] if index < len(requests) else None

    def send_all():
        client = Client(HTTP_HOST=host)
        try:
            while (request := take()) is not None:
                started = time.perf_counter()
                response = client.generic(
                    "POST",
                    request.path,
                    request.body,
                    content_type=request.content_type,
                    headers=request.headers,
                )
                elapsed = time.perf_counter() - started
                with lock:
                    timings.append(elapsed)
                    statuses[response.status_code] += 1
                    if response.status_code >= 300 and len(refusals) < 5:
                        refusals.append(
                            f"{request.path} {response.status_code}: {response.text[:200]}"
                        )
        finally:
            connection.close()

    try:
        start.wait(timeout=PUSH_TIMEOUT_S)
        cpu_started = time.process_time()
        pool = [threading.Thread(target=send_all) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        results.put({"timings": timings, "statuses": dict(statuses), "refusals": refusals,
                     "cpu_s": time.process_time() - cpu_started,
                     "finished_at": time.monotonic()})  # fmt: skip
    except BaseException as exc:  # the parent must hear of it, or it waits for nothing
        start.abort()
        results.put({"error": repr(exc)})


def _request(n: int, customer: int) -> Request:
    door = DOORS[customer % len(DOORS)]
    body_text = f"{BODIES[n % len(BODIES)]} (ref {n})"
    now_ms = int(time.time() * 1000) + n
    if door == "email":
        return _email(n, customer, body_text)
    if door == "x":
        return _x(n, customer, body_text, now_ms)
    if door == "whatsapp":
        return _meta(_whatsapp(n, customer, body_text, now_ms))
    return _meta(_messenger(door, n, customer, body_text, now_ms))


def _email(n: int, customer: int, text: str) -> Request:
    raw = (
        f"From: Customer {customer} <customer{customer}@bench.example>\r\n"
        f"To: support@{settings.WORKBENCH_MAIL_DOMAIN}\r\n"
        f"Subject: Question {n}\r\n"
        f"Message-ID: <bench-{n}@bench.example>\r\n"
        f"Date: {format_datetime(timezone.now())}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"{text}\r\n"
    ).encode()
    headers = {"Authorization": f"Bearer {EMAIL_SECRET}"}
    return Request("/inbound/email/raw/", raw, "message/rfc822", headers)


def _messenger(door: str, n: int, customer: int, text: str, now_ms: int) -> dict:
    account = PAGE_ID if door == "facebook" else IG_ACCOUNT
    event = {
        "sender": {"id": f"64238159{customer:08d}"},
        "recipient": {"id": account},
        "timestamp": now_ms,
        "message": {"mid": f"m_bench_{door}_{n}", "text": text},
    }
    kind = "page" if door == "facebook" else "instagram"
    return {"object": kind, "entry": [{"id": account, "time": now_ms, "messaging": [event]}]}


def _whatsapp(n: int, customer: int, text: str, now_ms: int) -> dict:
    phone = f"4477009{customer:05d}"
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": WA_NUMBER_ID},
        "contacts": [{"profile": {"name": f"Customer {customer}"}, "wa_id": phone}],
        "messages": [{"from": phone, "id": f"wamid.bench{n}", "timestamp": str(now_ms // 1000),
                      "type": "text", "text": {"body": text}}],
    }  # fmt: skip
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": value}]}],
    }


def _meta(payload: dict) -> Request:
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(META_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return Request("/inbound/meta/", body, "application/json", {"X-Hub-Signature-256": signature})


def _x(n: int, customer: int, text: str, now_ms: int) -> Request:
    sender = str(3_000_000_000 + customer)
    payload = {
        "for_user_id": OUR_X_ACCOUNT,
        "direct_message_events": [{
            "type": "message_create", "id": str(1_862_000_000_000_000_000 + n),
            "created_timestamp": str(now_ms),
            "message_create": {"target": {"recipient_id": OUR_X_ACCOUNT}, "sender_id": sender,
                               "message_data": {"text": text}},
        }],
        "users": {sender: {"id": sender, "name": f"Customer {customer}",
                           "screen_name": f"bench_customer_{customer}", "followers_count": 12}},
    }  # fmt: skip
    body = json.dumps(payload).encode()
    mac = hmac.new(X_SECRET.encode(), body, hashlib.sha256).digest()
    headers = {"x-twitter-webhooks-signature": "sha256=" + base64.b64encode(mac).decode()}
    return Request("/inbound/x/", body, "application/json", headers)


def render(figures: dict) -> str:
    ok = figures["messages_per_s"] >= TARGET_MESSAGES_PER_S
    rows = [
        ["messages/s", figures["messages_per_s"], f">= {TARGET_MESSAGES_PER_S:g}",
         "ok" if ok else "below target"],
        ["p50 ms per message", figures["p50_ms"], "", ""],
        ["p95 ms per message", figures["p95_ms"], "", ""],
        ["CPU ms per message (web processes)", figures["cpu_ms_per_message"], "", ""],
        ["stored / distinct", f"{figures['stored']:,} / {figures['distinct']:,}",
         "equal", "ok" if figures["stored"] == figures["distinct"] else "MISMATCH"],
    ]  # fmt: skip
    title = (
        f"bench ingest ({figures['scale']}): {figures['sent']:,} webhook requests "
        f"({figures['distinct']:,} distinct, the rest repeats) from {figures['customers']:,} "
        f"customers over email, Messenger, Instagram, WhatsApp and X; {figures['processes']} "
        f"processes of {figures['threads']} threads, {figures['wall_s']:g}s\n"
        f"(DEBUG={figures['debug']}; load average "
        f"{figures['load_before']:.2f} before, {figures['load_after']:.2f} after, on "
        f"{os.cpu_count()} cores)"
    )
    lines = [title, "", table(["figure", "value", "target", ""], rows), ""]
    lines.append(f"stored by channel: {figures['stored_by_channel']}")
    lines.append(f"customers: {figures['customers_stored']:,}; cases: {figures['cases']:,}")
    lines.append(f"responses: {figures['statuses']}")
    for error in figures.get("errors") or []:
        lines.append(f"refused: {error}")
    return "\n".join(lines)
