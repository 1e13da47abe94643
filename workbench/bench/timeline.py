"""`bench timeline`: one customer with 100,000 interactions among 1,000,000, read and written
through the real services.

The data is generated set-based (INSERT … SELECT generate_series) in the bench database, in the
order it would have arrived: every tenth interaction is the heavy customer's, the rest are spread
over the other customers, so the heavy customer's rows are scattered over the table as in life.
Then, in this process and through the ORM as the pages call it:

- the first timeline page (`timeline_page`), and the page 1,000 entries deep by keyset (the
  cursor of entry 1,000 taken once) against the same page by OFFSET, the cost keyset avoids;
- customer search (`search_customers`) with name and email prefixes;
- the customer page as an agent sees it (Django's test client, the whole stack but the socket);
- `record_interaction` one entry per transaction, as inbound traffic arrives, with its publish.

Publishing needs a Redis prefix of the bench's own (settings read it once, at import), so a
process started with any other prefix re-runs the command with one, as `bench realtime` does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from customers.models import Channel, Customer, Direction, Interaction, Kind
from customers.search import search_customers
from customers.timeline import (
    PAGE_SIZE,
    Cursor,
    record_interaction,
    timeline_for,
    timeline_page,
)
from workbench import roles
from workbench.bench.common import (
    bench_database,
    forget_redis_prefix,
    is_isolated,
    load_average,
    ms,
    percentile,
    run_isolated,
    table,
)
from workbench.models import User

DEPTH = 1_000  # the deep page starts after this many entries
# The far page starts 90% down the heavy customer's timeline: where keyset must still cost what
# the first page costs, and OFFSET reads (and throws away) almost the whole timeline.
FAR_SHARE = 0.9
PLANS = ("first", "deep", "far", "offset")
FAR_REQUESTS = 50  # an OFFSET read of 90,000 rows takes half a second; 50 of them say enough
WARMUP = 20
TARGET_FIRST_P95_MS = 25.0
TARGET_DEEP_VS_FIRST = 1.5
SESSION_BACKEND = "django.contrib.auth.backends.ModelBackend"

FIRST_NAMES = ("Ann", "Anna", "Ben", "Bea", "Carl", "Cleo", "Dan", "Dora", "Eve", "Emil", "Finn",
               "Fay", "Gus", "Gwen", "Hugo", "Ida", "Ivan", "Joe", "Jana", "Kai", "Lea", "Liam",
               "Mia", "Marc", "Nora", "Olga", "Oscar", "Pia", "Raj", "Rosa", "Sam", "Sara",
               "Tom", "Tess", "Uma", "Vic", "Wim", "Yara", "Zoe", "Zeno")  # fmt: skip
LAST_NAMES = ("Smith", "Jones", "Brown", "Taylor", "Wilson", "Evans", "Thomas", "Moore",
              "Walker", "White", "Martin", "Clarke", "Hall", "Wood", "Green", "Baker", "Hill",
              "King", "Wright", "Scott", "Adams", "Price", "Young", "Morris", "Cook", "Bell",
              "Ward", "Cox", "Fox", "Reed", "Kelly", "Murphy", "Doyle", "Byrne", "Novak",
              "Horvat", "Berg", "Lind", "Meyer", "Weber")  # fmt: skip
# Name words, whole names, email beginnings: what agents type into the search box.
SEARCH_QUERIES = ("ann", "sm", "zoe", "ta", "car", "mia weber", "ben sm", "hugo", "novak",
                  "ann.smith", "tom.reed1", "lea.", "sara.kelly12", "fay.fox3", "rosa@",
                  "eve.evans4", "kai", "wright", "gwen h", "oscar.b")  # fmt: skip
CHANNELS = (Channel.EMAIL, Channel.CHAT, Channel.WHATSAPP, Channel.X, Channel.PHONE, Channel.WEB)
BODIES = (
    "Hello, my order has not arrived yet and the tracking page says it left the depot last week.",
    "Thanks for getting back to me so quickly, the replacement works fine now.",
    "Could you tell me when the refund will show on my card? It has been ten days.",
    "I would like to change the delivery address on my subscription to my office.",
    "Your newsletter mentioned a discount on upgrades; does it apply to my plan as well?",
)  # fmt: skip


@dataclass(frozen=True)
class TimelineScale:
    customers: int
    interactions: int
    heavy_interactions: int  # the first customer's share of `interactions`
    requests: int  # timed calls per read measurement
    records: int  # record_interaction calls


SCALES = {
    "small": TimelineScale(
        customers=2_000, interactions=20_000, heavy_interactions=2_000, requests=200, records=200
    ),
    "full": TimelineScale(
        customers=100_000, interactions=1_000_000, heavy_interactions=100_000, requests=500,
        records=2_000,
    ),
}  # fmt: skip


def run(*, scale: str) -> tuple[dict, str]:
    """Generate the data, measure reads, search and writes; figures and a readable report."""
    figures = measure(SCALES[scale], scale) if is_isolated() else run_isolated("timeline", scale)
    return figures, render(figures)


def measure(size: TimelineScale, scale: str) -> dict:
    prefix = settings.REDIS_PREFIX
    figures: dict = {"scale": scale, "debug": settings.DEBUG, "requests": size.requests,
                     "load_before": load_average()}  # fmt: skip
    try:
        started = time.perf_counter()
        with bench_database():
            figures["database_s"] = round(time.perf_counter() - started, 1)
            started = time.perf_counter()
            heavy_id = generate(size)
            figures["generate_s"] = round(time.perf_counter() - started, 1)
            figures |= count_generated(heavy_id)
            figures |= measure_reads(heavy_id, size)
            figures |= measure_page(heavy_id, size)
            figures |= measure_records(heavy_id, size)
            figures["plans"] = explain_timeline(heavy_id, figures["far_depth"])
    finally:
        forget_redis_prefix(prefix)
    figures["load_after"] = load_average()
    return figures


# --- the data --------------------------------------------------------------------------------


def generate(size: TimelineScale) -> int:
    """Customers with one email identity each, then the interactions; the heavy customer's id."""
    every = size.interactions // size.heavy_interactions
    if every * size.heavy_interactions != size.interactions or size.customers < 2:
        raise CommandError("interactions must be a multiple of the heavy customer's share")
    agent = User.objects.create_user(username="bench-timeline-writer", first_name="Bench")
    params = {
        "customers": size.customers,
        "interactions": size.interactions,
        "every": every,
        "first": list(FIRST_NAMES),
        "last": list(LAST_NAMES),
        "bodies": list(BODIES),
        "channels": list(CHANNELS),
        "agent": agent.pk,
    }
    with connection.cursor() as cursor:
        # Names walk both lists (40 by 40), so a first-name prefix matches about 1 in 40 people.
        cursor.execute(
            """
            INSERT INTO customers_customer
                (display_name, attributes, lifecycle_stage, timezone, created_at, updated_at)
            SELECT (%(first)s::text[])[1 + n %% 40]
                   || ' ' || (%(last)s::text[])[1 + (n / 40) %% 40],
                   jsonb_build_object('plan', (ARRAY['free','pro','team'])[1 + n %% 3],
                                      'region', (ARRAY['eu','us','apac'])[1 + n %% 3]),
                   (ARRAY['lead','customer','loyal','at_risk'])[1 + n %% 4],
                   'Europe/London',
                   now() - interval '4 years' + n * interval '1 second',
                   now()
            FROM generate_series(0, %(customers)s - 1) AS n
            """,
            params,
        )
        cursor.execute("SELECT min(id), max(id) FROM customers_customer")
        first_id, last_id = cursor.fetchone()
        if last_id - first_id + 1 != size.customers:
            raise CommandError("the generated customers' ids are not one run")
        params["first_id"] = first_id
        cursor.execute(
            """
            INSERT INTO customers_identity (customer_id, channel, handle, display_name, created_at)
            SELECT id,
                   'email',
                   lower(replace(display_name, ' ', '.')) || (id - %(first_id)s) || '@example.com',
                   display_name,
                   created_at
            FROM customers_customer
            """,
            params,
        )
        # In arrival order, oldest first, three years up to a minute ago: entry n is the heavy
        # customer's when n is a multiple of `every`, else a spread-out other customer's.
        cursor.execute(
            """
            INSERT INTO customers_interaction
                (customer_id, channel, kind, direction, occurred_at, created_at, actor_id,
                 actor_label, title, body_text, body_html, is_private, external_id, status, data)
            SELECT customer_id, channel, kind, direction, at, at,
                   CASE WHEN direction = 'in' THEN NULL ELSE %(agent)s END,
                   CASE WHEN direction = 'in' THEN '' ELSE 'Bench' END,
                   CASE WHEN kind = 'message' THEN 'Re: order ' || (n %% 5000) ELSE '' END,
                   (%(bodies)s::text[])[1 + n %% 5],
                   '',
                   kind = 'note' AND n %% 2 = 0,
                   CASE WHEN direction = 'in' THEN 'bench-' || n END,
                   CASE WHEN direction = 'out' THEN 'delivered' ELSE '' END,
                   '{}'::jsonb
            FROM (
                SELECT n,
                       CASE WHEN n %% %(every)s = 0 THEN %(first_id)s
                            ELSE %(first_id)s + 1 + (n::bigint * 7919) %% (%(customers)s - 1) END
                           AS customer_id,
                       (%(channels)s::text[])[1 + n %% 6] AS channel,
                       CASE WHEN n %% 7 = 0 THEN 'note' WHEN n %% 13 = 0 THEN 'case_event'
                            WHEN n %% 17 = 0 THEN 'campaign_touch' ELSE 'message' END AS kind,
                       CASE WHEN n %% 7 = 0 OR n %% 13 = 0 THEN 'internal'
                            WHEN n %% 17 = 0 OR n %% 2 = 0 THEN 'out' ELSE 'in' END AS direction,
                       now() - interval '1 minute'
                           - (%(interactions)s - n) * (interval '3 years' / %(interactions)s)
                           AS at
                FROM generate_series(1, %(interactions)s) AS n
            ) AS arrivals
            """,
            params,
        )
    # VACUUM as autovacuum would have long since done on a live table: statistics, the
    # visibility map and hint bits, so no measured read pays for the bulk load.
    with connection.cursor() as cursor:
        for table_name in ("customers_customer", "customers_identity", "customers_interaction"):
            cursor.execute(f"VACUUM (ANALYZE) {table_name}")
    return first_id


def count_generated(heavy_id: int) -> dict:
    return {
        "customers": Customer.objects.count(),
        "interactions_total": Interaction.objects.count(),
        "customer_interactions": Interaction.objects.filter(customer_id=heavy_id).count(),
    }


# --- reads -------------------------------------------------------------------------------------


def timed(call: Callable[[int], object], requests: int) -> list[float]:
    """Sorted seconds of `requests` calls of call(i), after a few untimed ones."""
    for number in range(WARMUP):
        call(number)
    seconds = []
    for number in range(requests):
        started = time.perf_counter()
        call(number)
        seconds.append(time.perf_counter() - started)
    return sorted(seconds)


def cursor_at(customer_id: int, depth: int) -> Cursor:
    """The cursor a reader holds after `depth` entries, checked against the same page by OFFSET."""
    entry = timeline_for(customer_id)[depth - 1]
    cursor = Cursor(occurred_at=entry.occurred_at, id=entry.id)
    keyset_ids = [entry.id for entry in timeline_page(customer_id, before=cursor).entries]
    offset_ids = [entry.id for entry in offset_page(customer_id, depth)]
    if keyset_ids != offset_ids or len(keyset_ids) != PAGE_SIZE:
        raise CommandError(f"the keyset and OFFSET pages at {depth:,} differ: bad bench data")
    return cursor


def offset_page(customer_id: int, depth: int) -> list[Interaction]:
    """The page after `depth` entries the way keyset avoids: OFFSET reads and drops `depth` rows."""
    return list(timeline_for(customer_id)[depth : depth + PAGE_SIZE])


def measure_reads(heavy_id: int, size: TimelineScale) -> dict:
    far_depth = int(size.heavy_interactions * FAR_SHARE)
    cursor, far_cursor = cursor_at(heavy_id, DEPTH), cursor_at(heavy_id, far_depth)
    with CaptureQueriesContext(connection) as queries:
        timeline_page(heavy_id)
    first = timed(lambda _n: timeline_page(heavy_id), size.requests)
    deep = timed(lambda _n: timeline_page(heavy_id, before=cursor), size.requests)
    offset = timed(lambda _n: offset_page(heavy_id, DEPTH), size.requests)
    far = timed(lambda _n: timeline_page(heavy_id, before=far_cursor), FAR_REQUESTS)
    far_offset = timed(lambda _n: offset_page(heavy_id, far_depth), FAR_REQUESTS)
    matches = []

    def search(number: int) -> None:
        matches.append(len(list(search_customers(SEARCH_QUERIES[number % len(SEARCH_QUERIES)]))))

    found = timed(search, size.requests)
    first_p95, deep_p95, offset_p95 = (percentile(s, 95) for s in (first, deep, offset))
    return {
        "first_page_queries": len(queries),
        "first_page_p50_ms": ms(percentile(first, 50)),
        "first_page_p95_ms": ms(first_p95),
        "deep_page_p50_ms": ms(percentile(deep, 50)),
        "deep_page_p95_ms": ms(deep_p95),
        "offset_deep_page_p50_ms": ms(percentile(offset, 50)),
        "offset_deep_page_p95_ms": ms(offset_p95),
        "deep_vs_first": round(deep_p95 / first_p95, 2),
        "offset_vs_keyset": round(offset_p95 / deep_p95, 2),
        "far_depth": far_depth,
        "far_requests": FAR_REQUESTS,
        "far_page_p50_ms": ms(percentile(far, 50)),
        "far_page_p95_ms": ms(percentile(far, 95)),
        "offset_far_page_p95_ms": ms(percentile(far_offset, 95)),
        "far_vs_first": round(percentile(far, 95) / first_p95, 2),
        "search_queries": len(SEARCH_QUERIES),
        "search_mean_results": round(sum(matches) / len(matches), 1),
        "search_p50_ms": ms(percentile(found, 50)),
        "search_p95_ms": ms(percentile(found, 95)),
    }


def measure_page(heavy_id: int, size: TimelineScale) -> dict:
    """GET /customers/<id>/ as a signed-in agent: middleware, view, template, the whole page."""
    agent = User.objects.create_user(username="bench-timeline-agent", first_name="Bench")
    agent.groups.add(Group.objects.get(name=roles.AGENT))
    hosts = [host for host in settings.ALLOWED_HOSTS if host not in ("*", "") and host[0] != "."]
    client = Client(HTTP_HOST=hosts[0] if hosts else "localhost")
    client.force_login(agent, backend=SESSION_BACKEND)
    url = reverse("customers:detail", args=[heavy_id])

    def get(_number: int) -> None:
        response = client.get(url)
        if response.status_code != 200:
            raise CommandError(f"GET {url} answered {response.status_code}")

    statements = []

    def count(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    get(0)  # the first request also fills caches (content types, templates): not counted
    # Counted by a wrapper: a request's start empties connection.queries.
    with connection.execute_wrapper(count):
        get(1)
    pages = timed(get, size.requests)
    return {
        "page_queries": len(statements),
        "page_p50_ms": ms(percentile(pages, 50)),
        "page_p95_ms": ms(percentile(pages, 95)),
    }


# --- writes ------------------------------------------------------------------------------------


def measure_records(heavy_id: int, size: TimelineScale) -> dict:
    """Inbound emails for the heavy customer, one transaction each, as webhooks deliver them."""
    customer = Customer.objects.get(pk=heavy_id)
    started = time.perf_counter()
    for number in range(size.records):
        record_interaction(
            customer=customer,
            channel=Channel.EMAIL,
            kind=Kind.MESSAGE,
            direction=Direction.INBOUND,
            title=f"Bench message {number}",
            body_text=BODIES[number % len(BODIES)],
            external_id=f"bench-record-{number}",
        )
    seconds = time.perf_counter() - started
    recorded = Interaction.objects.filter(external_id__startswith="bench-record-").count()
    if recorded != size.records:
        raise CommandError(f"recorded {recorded} interactions of {size.records}")
    return {"records": recorded, "record_per_s": round(recorded / seconds, 1)}


def explain_timeline(heavy_id: int, far_depth: int) -> dict[str, str]:
    """EXPLAIN ANALYZE of the timeline reads, for the report: which index, how much it read."""
    options = {"analyze": True, "buffers": True, "timing": False, "summary": False}
    plans = {"first": timeline_for(heavy_id)[: PAGE_SIZE + 1].explain(**options)}
    for name, depth in (("deep", DEPTH), ("far", far_depth)):
        entry = timeline_for(heavy_id)[depth - 1]
        cursor = Cursor(occurred_at=entry.occurred_at, id=entry.id)
        plans[name] = timeline_for(heavy_id, before=cursor)[: PAGE_SIZE + 1].explain(**options)
    plans["offset"] = timeline_for(heavy_id)[DEPTH : DEPTH + PAGE_SIZE].explain(**options)
    return plans


# --- the report --------------------------------------------------------------------------------


def render(figures: dict) -> str:
    rows = [
        ["first page (keyset)", figures["first_page_p50_ms"], figures["first_page_p95_ms"],
         f"p95 <= {TARGET_FIRST_P95_MS:g} ms",
         _verdict(figures["first_page_p95_ms"] <= TARGET_FIRST_P95_MS)],
        [f"page {DEPTH:,} deep (keyset)", figures["deep_page_p50_ms"], figures["deep_page_p95_ms"],
         f"<= {TARGET_DEEP_VS_FIRST:g} x first ({figures['deep_vs_first']:g})",
         _verdict(figures["deep_vs_first"] <= TARGET_DEEP_VS_FIRST)],
        [f"page {DEPTH:,} deep (OFFSET)", figures["offset_deep_page_p50_ms"],
         figures["offset_deep_page_p95_ms"], f"{figures['offset_vs_keyset']:g} x keyset", ""],
        [f"page {figures['far_depth']:,} deep (keyset)", figures["far_page_p50_ms"],
         figures["far_page_p95_ms"], f"{figures['far_vs_first']:g} x first",
         _verdict(figures["far_vs_first"] <= TARGET_DEEP_VS_FIRST)],
        [f"page {figures['far_depth']:,} deep (OFFSET)", "", figures["offset_far_page_p95_ms"],
         f"{FAR_REQUESTS} calls", ""],
        ["customer search", figures["search_p50_ms"], figures["search_p95_ms"],
         f"{figures['search_mean_results']:g} results on average", ""],
        ["customer page (agent)", figures["page_p50_ms"], figures["page_p95_ms"],
         f"{figures['page_queries']} queries", ""],
    ]  # fmt: skip
    title = (
        f"bench timeline ({figures['scale']}): one customer with "
        f"{figures['customer_interactions']:,} interactions among "
        f"{figures['interactions_total']:,}; {figures['customers']:,} customers\n"
        f"(DEBUG={figures['debug']}; database {figures['database_s']:g}s, data "
        f"{figures['generate_s']:g}s; load average {figures['load_before']:.2f} before, "
        f"{figures['load_after']:.2f} after, on {os.cpu_count()} cores; "
        f"{figures['requests']} timed calls each)"
    )
    lines = [
        title,
        "",
        table(["read", "p50 ms", "p95 ms", "", "target"], rows),
        "",
        f"record_interaction: {figures['record_per_s']:,.1f} interactions/s "
        f"({figures['records']:,} inbound emails, one transaction and one publish each)",
    ]
    for name in PLANS:  # the figures may come back from a child with their keys sorted
        lines += ["", f"plan, {name}:", figures["plans"][name]]
    return "\n".join(lines)


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"
