"""`bench cases`: the agent workspace over 200,000 open cases, read and claimed through the real
views and services.

The data is generated set-based (INSERT … SELECT generate_series) in the bench database: customers
with an email identity each, open cases spread over three queues (most in "Support") plus a
history of solved and closed ones, one inbound message per case, a heavy customer whose timeline
holds 10,000 interactions, a light one with exactly 10, and a "Take next" queue holding the
unassigned cases the claimers race for. The two measured cases are opened, assigned and given a
commitment through `cases.lifecycle` and `cases.commitments`, as an agent would. Then:

- the case view (`cases:detail`) as a signed-in agent, through Django's test client (the whole
  stack but the socket), on the heavy customer's case; its query count is compared with the
  same view of the light customer's case: the count must not grow with the timeline;
- the queue page (`cases:queue?queue=<Support>`, default sort, 25 rows by keyset) as the agent
  sees it by default (their cases), their queues' unassigned cases, and all open cases as a
  supervisor; plus a page 1,000 rows deep by the page's own "next" links;
- take-next: 20 worker processes (each its own database connection) call
  `cases.claiming.claim_next_case` until nothing waits; every claim is checked three ways (the
  ids the workers got back, the assignee stored, the "taken by" timeline entries per case) and
  any case claimed twice is counted as a double claim, which fails the run.

Publishing needs a Redis prefix of the bench's own (settings read it once, at import), so a
process started with any other prefix re-runs the command with one, as `bench timeline` does.
"""

from __future__ import annotations

import html
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from cases.claiming import CLAIMABLE_STATUSES, claim_next_case, claimable_cases
from cases.commitments import record_commitment
from cases.lifecycle import assign_case, open_case
from cases.models import BusinessCalendar, Case, Queue, SlaPolicy, Status
from customers.models import Customer, Interaction, Kind
from workbench import roles
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
from workbench.models import User

WARMUP = 10
SESSION_BACKEND = "django.contrib.auth.backends.ModelBackend"
CLAIM_TIMEOUT_S = 600
TARGET_CASE_VIEW_P95_MS = 80.0
TARGET_QUEUE_P95_MS = 60.0
TARGET_CLAIMS_PER_S = 500.0
SHORT_TIMELINE = 10  # the light customer's timeline: the query count must match the heavy one's
QUEUE_PAGE_SIZE = 25
NEXT_LINK = re.compile(r'<a href="([^"]+)" rel="next">')
# Services write this many entries on each measured customer's timeline (opened, assigned,
# commitment recorded); the rest of each timeline is generated.
SERVICE_ENTRIES = 3
QUEUE_VIEWS = ("mine", "unassigned", "all")
PLANS = ("case_view", "queue", "claim")

OFFICE_HOURS = {day: [["09:00", "17:00"]] for day in ("mon", "tue", "wed", "thu", "fri")}
SUBJECTS = ("Order has not arrived", "Refund not received", "Kettle stopped heating",
            "Change of delivery address", "Invoice shows the wrong amount")  # fmt: skip
TOPICS = ("kettle", "toaster", "billing", "delivery")
CHANNELS = ("email", "chat", "whatsapp", "x", "phone", "web")
BODIES = (
    "Hello, my order has not arrived yet and the tracking page says it left the depot last week.",
    "Thanks for getting back to me so quickly, the replacement works fine now.",
    "Could you tell me when the refund will show on my card? It has been ten days.",
    "I would like to change the delivery address on my subscription to my office.",
    "Your newsletter mentioned a discount on upgrades; does it apply to my plan as well?",
)  # fmt: skip


@dataclass(frozen=True)
class CasesScale:
    customers: int
    open_cases: int  # open cases in all queues, the take-next queue's included
    history_cases: int  # solved and closed cases besides
    heavy_interactions: int  # the heavy customer's timeline
    claimable: int  # unassigned cases in the take-next queue
    workers: int  # concurrent claimers, one process and connection each
    staff: int  # agents the generated cases are assigned to
    requests: int  # timed requests per page measurement
    deep_rows: int  # the deep queue page starts after this many rows


SCALES = {
    "small": CasesScale(
        customers=2_000, open_cases=5_000, history_cases=1_000, heavy_interactions=1_000,
        claimable=300, workers=20, staff=10, requests=40, deep_rows=250,
    ),
    "full": CasesScale(
        customers=50_000, open_cases=200_000, history_cases=40_000, heavy_interactions=10_000,
        claimable=10_000, workers=20, staff=20, requests=300, deep_rows=1_000,
    ),
}  # fmt: skip


@dataclass
class World:
    """What the generated data's measurements need to find again."""

    agent: User
    supervisor: User
    claimers: list[User]
    support: Queue
    take_next: Queue
    heavy_case: Case
    short_case: Case


def run(*, scale: str) -> tuple[dict, str]:
    """Generate the data, measure the case view, the queue page and take-next; figures, report."""
    figures = measure(SCALES[scale], scale) if is_isolated() else run_isolated("cases", scale)
    return figures, render(figures)


def measure(size: CasesScale, scale: str) -> dict:
    prefix = settings.REDIS_PREFIX
    figures: dict = {"scale": scale, "debug": settings.DEBUG, "requests": size.requests,
                     "workers": size.workers, "load_before": load_average()}  # fmt: skip
    try:
        started = time.perf_counter()
        with bench_database():
            figures["database_s"] = round(time.perf_counter() - started, 1)
            started = time.perf_counter()
            world = generate(size)
            figures["generate_s"] = round(time.perf_counter() - started, 1)
            figures |= count_generated(world)
            plans: dict[str, str] = {}
            started = time.perf_counter()
            figures |= measure_case_view(world, size, plans)
            figures["case_view_s"] = round(time.perf_counter() - started, 1)
            started = time.perf_counter()
            figures |= measure_queue(world, size, plans)
            figures["queue_s"] = round(time.perf_counter() - started, 1)
            plans["claim"] = explain_claim(world.claimers[0])
            figures |= measure_claims(world, size)
            figures["plans"] = plans
    finally:
        forget_redis_prefix(prefix)
    figures["load_after"] = load_average()
    failed = []
    if figures["double_claims"]:
        failed.append(f"{figures['double_claims']} double claims")
    if figures["claims"] != figures["claimable"]:
        failed.append(f"{figures['claims']} claims of {figures['claimable']} waiting cases")
    if figures["case_view_queries"] != figures["case_view_short_queries"]:
        failed.append("the case view's query count grows with the timeline")
    if failed:
        figures["failed"] = failed
    return figures


# --- the data --------------------------------------------------------------------------------


def generate(size: CasesScale) -> World:
    """Users, queues, customers, cases and interactions; the two measured cases by service."""
    if size.claimable >= size.open_cases or size.customers < 3:
        raise CommandError("the take-next pool must be part of the open cases; 3+ customers")
    agent_group = Group.objects.get(name=roles.AGENT)
    agent = _user("bench-agent", "Ada", agent_group)
    supervisor = _user("bench-supervisor", "Sam", Group.objects.get(name=roles.SUPERVISOR))
    staff = [agent] + [_user(f"bench-staff-{n}", f"Staff {n}", agent_group)
                       for n in range(1, size.staff)]  # fmt: skip
    claimers = [_user(f"bench-claimer-{n}", f"Claimer {n}", agent_group)
                for n in range(1, size.workers + 1)]  # fmt: skip
    calendar = BusinessCalendar.objects.create(
        name="Bench office", timezone="Europe/London", working_hours=OFFICE_HOURS
    )
    support, billing, returns, take_next = (
        Queue.objects.create(name=name, calendar=calendar)
        for name in ("Support", "Billing", "Returns", "Take next")
    )
    for queue in (support, billing, returns, take_next):
        for priority, first, resolve in (("urgent", 60, 480), ("high", 120, 960),
                                         ("normal", 240, 1440), ("low", 480, 2880)):  # fmt: skip
            SlaPolicy.objects.create(queue=queue, priority=priority, first_response_minutes=first,
                                     resolution_minutes=resolve)  # fmt: skip
    support.members.add(*staff)
    billing.members.add(*staff)
    returns.members.add(*staff[1:])
    take_next.members.add(*claimers)
    # The supervisor leads every queue, so their "all open cases" tab is all of them.
    for queue in (support, billing, returns, take_next):
        queue.members.add(supervisor)
    case_type = ContentType.objects.get_for_model(Case)
    params = {
        "customers": size.customers,
        "spread": size.open_cases - size.claimable,
        "claimable": size.claimable,
        "history": size.history_cases,
        "heavy": size.heavy_interactions - SERVICE_ENTRIES,
        "short": SHORT_TIMELINE - SERVICE_ENTRIES,
        "staff": [user.pk for user in staff],
        "support": support.pk,
        "billing": billing.pk,
        "returns": returns.pk,
        "take_next": take_next.pk,
        "subjects": list(SUBJECTS),
        "topics": list(TOPICS),
        "channels": list(CHANNELS),
        "bodies": list(BODIES),
        "case_type": case_type.pk,
    }
    with connection.cursor() as cursor:
        first_id = _generate_customers(cursor, params)
        params["first_id"] = first_id
        _generate_cases(cursor, params)
        _generate_interactions(cursor, params)
    heavy, short = Customer.objects.get(pk=first_id), Customer.objects.get(pk=first_id + 1)
    heavy_case = _measured_case(heavy, support, agent)
    short_case = _measured_case(short, support, agent)
    # VACUUM as autovacuum would have long since done on live tables: statistics, the
    # visibility map and hint bits, so no measured read pays for the bulk load.
    with connection.cursor() as cursor:
        for name in ("customers_customer", "customers_identity", "customers_interaction",
                     "cases_case", "cases_commitment"):  # fmt: skip
            cursor.execute(f"VACUUM (ANALYZE) {name}")
    return World(agent=agent, supervisor=supervisor, claimers=claimers, support=support,
                 take_next=take_next, heavy_case=heavy_case, short_case=short_case)  # fmt: skip


def _user(username: str, first_name: str, group: Group) -> User:
    user = User.objects.create_user(username=username, first_name=first_name, last_name="Bench")
    user.groups.add(group)
    return user


def _generate_customers(cursor, params: dict) -> int:
    """Customers (the first is the heavy one, the second the light one) with an email each."""
    cursor.execute(
        """
        INSERT INTO customers_customer
            (display_name, attributes, lifecycle_stage, timezone, created_at, updated_at)
        SELECT 'Customer ' || n,
               jsonb_build_object('plan', (ARRAY['free','pro','team'])[1 + n %% 3]),
               (ARRAY['lead','customer','loyal','at_risk'])[1 + n %% 4],
               'Europe/London',
               now() - interval '3 years' + n * interval '1 second',
               now()
        FROM generate_series(0, %(customers)s - 1) AS n
        """,
        params,
    )
    cursor.execute("SELECT min(id), max(id) FROM customers_customer")
    first_id, last_id = cursor.fetchone()
    if last_id - first_id + 1 != params["customers"]:
        raise CommandError("the generated customers' ids are not one run")
    cursor.execute(
        """
        INSERT INTO customers_identity (customer_id, channel, handle, display_name, created_at)
        SELECT id, 'email', 'customer' || id || '@example.com', display_name, created_at
        FROM customers_customer
        """
    )
    return first_id


def _generate_cases(cursor, params: dict) -> None:
    """Open cases over Support (60%), Billing and Returns; the take-next pool; a history.

    Half the open cases are open, 30% new, 20% pending (clock paused: no SLA due time); open
    and pending ones are mostly assigned over the staff, new ones never. SLA due times spread
    from two days overdue to twelve days ahead. The heavy and light customers get none here.
    """
    cursor.execute(
        """
        INSERT INTO cases_case
            (customer_id, subject, status, priority, priority_rank, queue_id, assignee_id,
             channel, thread_key, topics, created_at, updated_at, first_responded_at, solved_at,
             closed_at, first_response_due_at, resolution_due_at, sla_minutes_used,
             sla_clock_started_at, sla_due_at, first_response_breached_at,
             resolution_breached_at, pauses_marketing, merged_into_id)
        SELECT customer_id, subject, status, priority, rank, queue_id,
               CASE WHEN status = 'new' OR n %% 3 = 0 THEN NULL
                    ELSE (%(staff)s::bigint[])[1 + (n / 10) %% cardinality(%(staff)s::bigint[])]
               END,
               channel, '<bench-' || n || '@example.com>', ARRAY[topic], created_at, created_at,
               CASE WHEN status = 'new' THEN NULL ELSE created_at + interval '1 hour' END,
               NULL, NULL,
               CASE WHEN status = 'new' THEN due END,
               CASE WHEN status = 'pending' THEN NULL ELSE due + interval '1 day' END,
               0,
               CASE WHEN status = 'pending' THEN NULL ELSE created_at END,
               CASE WHEN status = 'pending' THEN NULL ELSE due END,
               NULL, NULL, false, NULL
        FROM (
            SELECT n,
                   %(first_id)s + 2 + (n::bigint * 7919) %% (%(customers)s - 2) AS customer_id,
                   'Order ' || n || ': ' || (%(subjects)s::text[])[1 + n %% 5] AS subject,
                   CASE WHEN n %% 10 < 5 THEN 'open' WHEN n %% 10 < 8 THEN 'new'
                        ELSE 'pending' END AS status,
                   CASE WHEN n %% 20 = 0 THEN 'urgent' WHEN n %% 20 < 4 THEN 'high'
                        WHEN n %% 20 < 17 THEN 'normal' ELSE 'low' END AS priority,
                   CASE WHEN n %% 20 = 0 THEN 0 WHEN n %% 20 < 4 THEN 1
                        WHEN n %% 20 < 17 THEN 2 ELSE 3 END AS rank,
                   CASE WHEN n %% 5 < 3 THEN %(support)s WHEN n %% 5 = 3 THEN %(billing)s
                        ELSE %(returns)s END AS queue_id,
                   (%(channels)s::text[])[1 + n %% 6] AS channel,
                   (%(topics)s::text[])[1 + n %% 4] AS topic,
                   now() - interval '30 days' * ((n::bigint * 104729) %% 100000) / 100000.0
                       AS created_at,
                   now() - interval '2 days'
                       + ((n::bigint * 15485863) %% 20160) * interval '1 minute' AS due
            FROM generate_series(1, %(spread)s) AS n
        ) AS generated
        """,
        params,
    )
    # The take-next pool: unassigned new and open cases, mixed priorities and deadlines.
    cursor.execute(
        """
        INSERT INTO cases_case
            (customer_id, subject, status, priority, priority_rank, queue_id, assignee_id,
             channel, thread_key, topics, created_at, updated_at, first_response_due_at,
             resolution_due_at, sla_minutes_used, sla_clock_started_at, sla_due_at,
             pauses_marketing)
        SELECT %(first_id)s + 2 + (n::bigint * 7919) %% (%(customers)s - 2),
               'Waiting ' || n || ': ' || (%(subjects)s::text[])[1 + n %% 5],
               CASE WHEN n %% 4 = 0 THEN 'open' ELSE 'new' END,
               (ARRAY['urgent','high','normal','normal','low'])[1 + n %% 5],
               (ARRAY[0, 1, 2, 2, 3])[1 + n %% 5],
               %(take_next)s, NULL, 'email', '<bench-waiting-' || n || '@example.com>',
               ARRAY[(%(topics)s::text[])[1 + n %% 4]],
               now() - n * interval '1 minute', now() - n * interval '1 minute',
               now() + ((n::bigint * 7919) %% 2880) * interval '1 minute',
               now() + interval '1 day' + ((n::bigint * 7919) %% 2880) * interval '1 minute',
               0, now() - n * interval '1 minute',
               now() + ((n::bigint * 7919) %% 2880) * interval '1 minute',
               false
        FROM generate_series(1, %(claimable)s) AS n
        """,
        params,
    )
    cursor.execute(
        """
        INSERT INTO cases_case
            (customer_id, subject, status, priority, priority_rank, queue_id, assignee_id,
             channel, thread_key, topics, created_at, updated_at, first_responded_at, solved_at,
             closed_at, sla_minutes_used, pauses_marketing)
        SELECT %(first_id)s + 2 + (n::bigint * 104729) %% (%(customers)s - 2),
               'Earlier ' || n || ': ' || (%(subjects)s::text[])[1 + n %% 5],
               CASE WHEN n %% 4 = 0 THEN 'solved' ELSE 'closed' END,
               'normal', 2,
               CASE WHEN n %% 5 < 3 THEN %(support)s ELSE %(billing)s END,
               (%(staff)s::bigint[])[1 + n %% cardinality(%(staff)s::bigint[])],
               'email', '<bench-earlier-' || n || '@example.com>', ARRAY[]::varchar[],
               now() - interval '400 days' + n * interval '5 minutes',
               now() - interval '390 days' + n * interval '5 minutes',
               now() - interval '400 days' + n * interval '5 minutes' + interval '1 hour',
               now() - interval '399 days' + n * interval '5 minutes',
               CASE WHEN n %% 4 = 0 THEN NULL
                    ELSE now() - interval '390 days' + n * interval '5 minutes' END,
               120, false
        FROM generate_series(1, %(history)s) AS n
        """,
        params,
    )


def _generate_interactions(cursor, params: dict) -> None:
    """One inbound message per generated case; the heavy and light customers' timelines."""
    cursor.execute(
        """
        INSERT INTO customers_interaction
            (customer_id, channel, kind, direction, occurred_at, created_at, actor_label, title,
             body_text, body_html, is_private, external_id, status, data, subject_type_id,
             subject_id)
        SELECT customer_id, channel, 'message', 'in', created_at, created_at, '', subject,
               (%(bodies)s::text[])[1 + id %% 5], '', false, 'bench-case-' || id, '', '{}'::jsonb,
               %(case_type)s, id
        FROM cases_case
        """,
        params,
    )
    # Oldest first over three years up to an hour ago: messages in and out, notes, case events.
    for customer_offset, count in ((0, params["heavy"]), (1, params["short"])):
        cursor.execute(
            """
            INSERT INTO customers_interaction
                (customer_id, channel, kind, direction, occurred_at, created_at, actor_label,
                 title, body_text, body_html, is_private, external_id, status, data)
            SELECT %(customer)s, channel, kind, direction, at, at,
                   CASE WHEN direction = 'in' THEN '' ELSE 'Bench' END,
                   CASE WHEN kind = 'message' THEN 'Re: order ' || n ELSE 'Case event ' || n END,
                   (%(bodies)s::text[])[1 + n %% 5], '',
                   kind = 'note',
                   CASE WHEN direction = 'in' THEN 'bench-' || %(customer)s || '-' || n END,
                   '', '{}'::jsonb
            FROM (
                SELECT n,
                       (%(channels)s::text[])[1 + n %% 6] AS channel,
                       CASE WHEN n %% 7 = 0 THEN 'note' WHEN n %% 13 = 0 THEN 'case_event'
                            ELSE 'message' END AS kind,
                       CASE WHEN n %% 7 = 0 OR n %% 13 = 0 THEN 'internal'
                            WHEN n %% 2 = 0 THEN 'out' ELSE 'in' END AS direction,
                       now() - interval '1 hour'
                           - (%(count)s - n) * (interval '3 years' / %(count)s) AS at
                FROM generate_series(1, %(count)s) AS n
            ) AS arrivals
            """,
            {**params, "customer": params["first_id"] + customer_offset, "count": count},
        )


def _measured_case(customer: Customer, queue: Queue, agent: User) -> Case:
    """A case opened, taken and promised on by the agent, through the services (3 entries)."""
    case = open_case(customer=customer, queue=queue, subject="Kettle stopped heating",
                     channel="email", priority="high", topics=["kettle"], actor=agent)  # fmt: skip
    case = assign_case(case=case, assignee=agent, actor=agent)
    record_commitment(case=case, kind="replacement", text="A new kettle by courier",
                      due_at=timezone.now() + timedelta(days=2), topics=["kettle"],
                      actor=agent)  # fmt: skip
    return case


def count_generated(world: World) -> dict:
    open_cases = Case.objects.filter(status__in=(Status.NEW, Status.OPEN, Status.PENDING))
    return {
        "cases": Case.objects.count(),
        "open_cases": open_cases.count(),
        "support_open_cases": open_cases.filter(queue=world.support).count(),
        "claimable": claimable_cases([world.take_next.pk]).count(),
        "interactions_total": Interaction.objects.count(),
        "customer_interactions": _timeline_length(world.heavy_case),
        "short_customer_interactions": _timeline_length(world.short_case),
    }


def _timeline_length(case: Case) -> int:
    return Interaction.objects.filter(customer_id=case.customer_id).count()


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


def signed_in(user: User) -> Client:
    hosts = [host for host in settings.ALLOWED_HOSTS if host not in ("*", "") and host[0] != "."]
    client = Client(HTTP_HOST=hosts[0] if hosts else "localhost")
    client.force_login(user, backend=SESSION_BACKEND)
    return client


def getter(client: Client, url: str, *, expect: str = "") -> Callable[[int], None]:
    def get(_number: int) -> None:
        response = client.get(url)
        if response.status_code != 200:
            raise CommandError(f"GET {url} answered {response.status_code}")
        if expect and expect.encode() not in response.content:
            raise CommandError(f"GET {url} did not show {expect!r}")

    return get


class Statements:
    """The SQL one request runs, with its parameters and time (a request's start empties
    connection.queries, so a wrapper records them)."""

    def __init__(self) -> None:
        self.executed: list[tuple[float, str, object]] = []

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.executed.append((time.perf_counter() - started, sql, params))

    def sql_ms(self) -> float:
        """Time spent in the database (and its round trips) by the request."""
        return ms(sum(seconds for seconds, _, _ in self.executed))

    def slowest_plan(self) -> str:
        """EXPLAIN ANALYZE of the slowest SELECT the request ran, for the report."""
        selects = [s for s in self.executed if s[1].lstrip().upper().startswith("SELECT")]
        if not selects:
            return ""
        _, sql, params = max(selects, key=lambda statement: statement[0])
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, SUMMARY OFF) {sql}", params)
            return "\n".join(row[0] for row in cursor.fetchall())


def count_statements(get: Callable[[int], None]) -> Statements:
    statements = Statements()
    get(0)  # the first request also fills caches (content types, templates): not counted
    with connection.execute_wrapper(statements):
        get(1)
    return statements


def measure_case_view(world: World, size: CasesScale, plans: dict) -> dict:
    """GET /cases/<id>/ as the assigned agent: heavy timeline, and light for the query count."""
    client = signed_in(world.agent)
    heavy = getter(client, reverse("cases:detail", args=[world.heavy_case.pk]),
                   expect="Kettle stopped heating")  # fmt: skip
    short = getter(client, reverse("cases:detail", args=[world.short_case.pk]),
                   expect="Kettle stopped heating")  # fmt: skip
    heavy_statements, short_statements = count_statements(heavy), count_statements(short)
    plans["case_view"] = heavy_statements.slowest_plan()
    pages = timed(heavy, size.requests)
    short_pages = timed(short, max(size.requests // 4, 20))
    return {
        "case_view_queries": len(heavy_statements.executed),
        "case_view_sql_ms": heavy_statements.sql_ms(),
        "case_view_short_queries": len(short_statements.executed),
        "case_view_p50_ms": ms(percentile(pages, 50)),
        "case_view_p95_ms": ms(percentile(pages, 95)),
        "case_view_short_p95_ms": ms(percentile(short_pages, 95)),
    }


def measure_queue(world: World, size: CasesScale, plans: dict) -> dict:
    """The Support queue, default sort, as the agent (their cases; their queues' unassigned
    cases) and as a supervisor (all open cases), then 1,000 rows deep by the next links."""
    base = reverse("cases:queue")
    queue = world.support.pk
    views = {
        "mine": (world.agent, f"{base}?queue={queue}"),
        "unassigned": (world.agent, f"{base}?tab=queues&queue={queue}"),
        "all": (world.supervisor, f"{base}?tab=all&queue={queue}"),
    }
    figures: dict = {}
    statements_of: dict[str, Statements] = {}
    for name, (user, url) in views.items():
        get = getter(signed_in(user), url, expect='id="case-row-')
        statements_of[name] = count_statements(get)
        seconds = timed(get, size.requests)
        figures[f"queue_{name}_queries"] = len(statements_of[name].executed)
        figures[f"queue_{name}_sql_ms"] = statements_of[name].sql_ms()
        figures[f"queue_{name}_p50_ms"] = ms(percentile(seconds, 50))
        figures[f"queue_{name}_p95_ms"] = ms(percentile(seconds, 95))
    deep_url = deep_queue_url(world.supervisor, views["all"][1], size.deep_rows)
    deep = timed(getter(signed_in(world.supervisor), deep_url, expect='id="case-row-'),
                 size.requests)  # fmt: skip
    figures["queue_deep_rows"] = size.deep_rows
    figures["queue_deep_p95_ms"] = ms(percentile(deep, 95))
    worst = max(QUEUE_VIEWS, key=lambda name: figures[f"queue_{name}_p95_ms"])
    figures["queue_p50_ms"] = figures[f"queue_{worst}_p50_ms"]
    figures["queue_p95_ms"] = figures[f"queue_{worst}_p95_ms"]
    figures["queue_worst_view"] = worst
    plans["queue"] = f"(the {worst} view's slowest query)\n" + statements_of[worst].slowest_plan()
    figures["queue_queries"] = figures[f"queue_{worst}_queries"]
    return figures


def deep_queue_url(user: User, url: str, rows: int) -> str:
    """The page `rows` rows down, reached as a reader does: by the page's "next" links."""
    client = signed_in(user)
    for _ in range(rows // QUEUE_PAGE_SIZE):
        response = client.get(url)
        found = NEXT_LINK.search(response.content.decode())
        if response.status_code != 200 or found is None:
            raise CommandError(f"the queue ended before {rows:,} rows at {url}")
        url = html.unescape(found.group(1))
    return url


# --- take next ---------------------------------------------------------------------------------


def explain_claim(claimer: User) -> str:
    """EXPLAIN ANALYZE of take-next's locking read for a claimer of one queue (rolled back)."""
    query = (
        claimable_cases(list(claimer.queues.values_list("id", flat=True)))
        .select_for_update(skip_locked=True, of=("self",))
        .select_related("customer")[:1]
    )
    with transaction.atomic():
        plan = query.explain(analyze=True, buffers=True, timing=False, summary=False)
        transaction.set_rollback(True)
    return plan


def measure_claims(world: World, size: CasesScale) -> dict:
    """`size.workers` processes, each with its own connection, claim until nothing waits."""
    reports, started = run_forked(
        claim_worker,
        [(claimer.pk,) for claimer in world.claimers],
        what="a claim worker",
        timeout_s=CLAIM_TIMEOUT_S,
    )
    seconds = max(report["finished_at"] for report in reports) - started
    return {"claims_s": round(seconds, 2)} | check_claims(world, reports, seconds)


def claim_worker(claimer_id: int, start, results) -> None:
    """One agent pressing "Take next" as fast as the server answers, until nothing waits."""
    claimed: list[int] = []
    latencies: list[float] = []
    try:
        claimer = User.objects.get(pk=claimer_id)
        connection.ensure_connection()
        start.wait(timeout=CLAIM_TIMEOUT_S)
        cpu_started = time.process_time()
        while True:
            began = time.perf_counter()
            case = claim_next_case(agent=claimer)
            if case is None:
                break
            latencies.append(time.perf_counter() - began)
            claimed.append(case.pk)
        results.put({"claimer_id": claimer_id, "claimed": claimed, "latencies": latencies,
                     "cpu_s": time.process_time() - cpu_started,
                     "finished_at": time.monotonic()})  # fmt: skip
    except BaseException as exc:  # the parent must hear of it, or it waits for nothing
        start.abort()
        results.put({"claimer_id": claimer_id, "error": repr(exc), "finished_at": 0.0})
    finally:
        connection.close()


def check_claims(world: World, reports: list[dict], seconds: float) -> dict:
    """Claims per second, and every case claimed twice found three ways: two workers got it
    back, its stored assignee is not the worker that got it, or it has two "taken" entries."""
    got = Counter(case_id for report in reports for case_id in report["claimed"])
    twice = {case_id for case_id, times in got.items() if times > 1}
    claimed_by = {case_id: report["claimer_id"] for report in reports
                  for case_id in report["claimed"]}  # fmt: skip
    stored = dict(Case.objects.filter(pk__in=list(got)).values_list("pk", "assignee_id"))
    twice |= {case_id for case_id, claimer_id in claimed_by.items()
              if stored.get(case_id) != claimer_id}  # fmt: skip
    taken_events = Counter(
        Interaction.objects.filter(
            kind=Kind.CASE_EVENT,
            status="assigned",
            subject_type=ContentType.objects.get_for_model(Case),
            subject_id__in=list(got),
        ).values_list("subject_id", flat=True)
    )
    twice |= {case_id for case_id, times in taken_events.items() if times > 1}
    latencies = [seconds for report in reports for seconds in report["latencies"]]
    claims = sum(got.values())
    waiting = Case.objects.filter(
        queue=world.take_next, assignee__isnull=True, status__in=CLAIMABLE_STATUSES
    ).count()
    return {
        "claims": claims,
        "claims_left_waiting": waiting,
        "claims_per_s": round(claims / seconds, 1) if seconds > 0 else 0.0,
        "claim_p50_ms": ms(percentile(latencies, 50)),
        "claim_p95_ms": ms(percentile(latencies, 95)),
        # What one claim costs the claiming process in CPU (ORM, publishing): on a machine of
        # few cores this, not the database, is what bounds claims per second.
        "claim_cpu_ms": ms(sum(r["cpu_s"] for r in reports) / claims) if claims else 0.0,
        "claims_per_worker_min": min(len(report["claimed"]) for report in reports),
        "claims_per_worker_max": max(len(report["claimed"]) for report in reports),
        "double_claims": len(twice),
    }


# --- the report --------------------------------------------------------------------------------


def render(figures: dict) -> str:
    rows = [
        ["case view (heavy timeline)", figures["case_view_p50_ms"], figures["case_view_p95_ms"],
         f"p95 <= {TARGET_CASE_VIEW_P95_MS:g} ms ({figures['case_view_sql_ms']:g} ms SQL)",
         _verdict(figures["case_view_p95_ms"] <= TARGET_CASE_VIEW_P95_MS)],
        ["case view (10 entries)", "", figures["case_view_short_p95_ms"], "", ""],
        ["case view queries", figures["case_view_short_queries"], figures["case_view_queries"],
         "10 entries / heavy: equal",
         _verdict(figures["case_view_queries"] == figures["case_view_short_queries"])],
        *[[f"queue: {name}", figures[f"queue_{name}_p50_ms"], figures[f"queue_{name}_p95_ms"],
           f"{figures[f'queue_{name}_queries']} queries, {figures[f'queue_{name}_sql_ms']:g} ms",
           _verdict(figures[f"queue_{name}_p95_ms"] <= TARGET_QUEUE_P95_MS)]
          for name in QUEUE_VIEWS],
        [f"queue: all, {figures['queue_deep_rows']:,} rows deep", "",
         figures["queue_deep_p95_ms"], "keyset",
         _verdict(figures["queue_deep_p95_ms"] <= TARGET_QUEUE_P95_MS)],
        ["take next (one claim)", figures["claim_p50_ms"], figures["claim_p95_ms"],
         f"{figures['workers']} processes", ""],
    ]  # fmt: skip
    title = (
        f"bench cases ({figures['scale']}): {figures['open_cases']:,} open cases of "
        f"{figures['cases']:,} ({figures['support_open_cases']:,} in Support), a customer with "
        f"{figures['customer_interactions']:,} interactions among "
        f"{figures['interactions_total']:,}\n"
        f"(DEBUG={figures['debug']}; database {figures['database_s']:g}s, data "
        f"{figures['generate_s']:g}s, case view {figures['case_view_s']:g}s, queue "
        f"{figures['queue_s']:g}s; load average {figures['load_before']:.2f} before, "
        f"{figures['load_after']:.2f} after, on {os.cpu_count()} cores; "
        f"{figures['requests']} timed requests each)"
    )
    claims_met = figures["claims_per_s"] >= TARGET_CLAIMS_PER_S
    lines = [
        title,
        "",
        table(["read", "p50 ms", "p95 ms", "", "target"], rows),
        "",
        f"take next: {figures['claims']:,} claims of {figures['claimable']:,} waiting cases in "
        f"{figures['claims_s']:g}s by {figures['workers']} processes = "
        f"{figures['claims_per_s']:,.1f} claims/s (target >= {TARGET_CLAIMS_PER_S:g}: "
        f"{_verdict(claims_met)}); {figures['claims_per_worker_min']}-"
        f"{figures['claims_per_worker_max']} per worker; "
        f"{figures['claims_left_waiting']} left waiting; "
        f"double claims: {figures['double_claims']}; "
        f"{figures['claim_cpu_ms']:g} ms of the claiming process's CPU per claim",
    ]
    for name in PLANS:  # the figures may come back from a child with their keys sorted
        lines += ["", f"plan, {name}:", figures["plans"][name]]
    return "\n".join(lines)


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"
