"""Take next: an agent claims the most urgent unassigned case of their queues, never a taken one."""

from __future__ import annotations

from functools import cache

from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.db.models import F
from django.utils import timezone

from cases.models import Case, Queue, Status
from cases.sla import case_changed_events
from customers.models import Channel, Customer, Direction, Interaction, Kind
from customers.timeline import INTERACTION_EVENT, MAX_TITLE_CHARS
from workbench import realtime, roles, sql

CLAIMABLE_STATUSES = (Status.NEW, Status.OPEN)
# How far down each queue the first look reaches: more than the agents claiming at one moment,
# whose locked rows are skipped.
CANDIDATES_PER_QUEUE = 50


def claimable_cases(queue_ids):
    """Unassigned new/open cases of the queues, most urgent first (`case_unassigned_next`)."""
    return Case.objects.filter(
        queue_id__in=queue_ids, assignee__isnull=True, status__in=CLAIMABLE_STATUSES
    ).order_by("priority_rank", F("sla_due_at").asc(nulls_last=True), "id")


# Take-next in one statement: find the most urgent free case, lock it (skipping rows another
# claimer holds) and assign it, returning the whole row. `{candidates}` is either the
# CANDIDATES_PER_QUEUE most urgent ids of each queue (one short range of `case_unassigned_next`
# per queue) or, when concurrent claimers hold all of those, every waiting case of the queues.
# The outer WHERE repeats the claimable conditions: PostgreSQL re-checks them on the locked row,
# so a case assigned by a claim that committed after this statement's snapshot is skipped, never
# taken twice. Same order as `claimable_cases`.
_CLAIM_SQL = """
WITH next AS (
    SELECT c.id FROM {case} c
    WHERE c.id IN ({candidates})
      AND c.assignee_id IS NULL AND c.status = ANY(%(statuses)s)
    ORDER BY c.priority_rank, c.sla_due_at ASC NULLS LAST, c.id
    LIMIT 1
    FOR UPDATE OF c SKIP LOCKED
), taken AS (
    UPDATE {case} AS c SET assignee_id = %(agent)s, updated_at = %(now)s
    FROM next WHERE c.id = next.id
    RETURNING c.*
), entry AS (
    INSERT INTO {interaction} ({entry_columns})
    SELECT {entry_values} FROM taken JOIN {customer} cu ON cu.id = taken.customer_id
    RETURNING id
)
SELECT {case_columns}, {customer_columns}, (SELECT id FROM entry)
FROM taken JOIN {customer} cu ON cu.id = taken.customer_id
"""
# The timeline entry's values that depend on the case taken (the rest are parameters): on the
# customer's surviving profile, about the case, "Case #12 taken by Ada Lovelace".
_ENTRY_FROM_CASE = {
    "customer_id": "COALESCE(cu.merged_into_id, taken.customer_id)",
    "subject_id": "taken.id",
    "title": f"left('Case #' || taken.id || %(entry_title)s, {MAX_TITLE_CHARS})",
    "data": "jsonb_build_object('case_id', taken.id, 'assignee_id', %(agent)s::bigint)",
}
_HEADS = """
    SELECT head.id FROM ({my_queues}) AS q(id)
    CROSS JOIN LATERAL (
        SELECT w.id FROM {case} w
        WHERE w.queue_id = q.id AND w.assignee_id IS NULL AND w.status = ANY(%(statuses)s)
        ORDER BY w.priority_rank, w.sla_due_at ASC NULLS LAST, w.id
        LIMIT %(per_queue)s
    ) AS head
"""
_EVERY_WAITING = """
    SELECT w.id FROM {case} w
    WHERE w.queue_id IN ({my_queues}) AND w.assignee_id IS NULL
      AND w.status = ANY(%(statuses)s)
"""


def _entry_fields() -> list:
    return sql.insert_fields(Interaction)


@cache
def _claim_sql(candidates: str) -> str:
    quote = connection.ops.quote_name
    table = quote(Case._meta.db_table)
    members = Queue.members.through._meta
    # Identifiers from the models' own metadata, quoted; every value is a parameter.
    queue_column, user_column = (quote(members.get_field(f).column) for f in ("queue", "user"))
    my_queues = f"SELECT m.{queue_column} FROM {quote(members.db_table)} m"  # noqa: S608
    my_queues += f" WHERE m.{user_column} = %(agent)s"
    return _CLAIM_SQL.format(
        case=table,
        candidates=candidates.format(case=table, my_queues=my_queues),
        customer=quote(Customer._meta.db_table),
        case_columns=sql.columns(Case, "taken"),
        customer_columns=sql.columns(Customer, "cu"),
        interaction=quote(Interaction._meta.db_table),
        entry_columns=", ".join(quote(f.column) for f in _entry_fields()),
        entry_values=", ".join(
            _ENTRY_FROM_CASE.get(f.attname, f"%(entry_{f.attname})s") for f in _entry_fields()
        ),
    )


# The entry's columns that change with each claim; every other column is the same every time.
# The content type is asked each time: its id changes when a test database is flushed, and
# Django's own cache of it is cleared then while a cache of ours would not be.
_PER_CLAIM = ("occurred_at", "created_at", "actor_id", "actor_label", "subject_type_id")


def _entry_params(agent, now) -> dict:
    """The claim's timeline entry as `record_case_event` would write it, less what the SQL
    fills in from the case (`_ENTRY_FROM_CASE`): the per-claim columns here, the rest from
    `_constant_entry_params`."""
    values = {"occurred_at": now, "created_at": now, "actor_id": agent.pk,
              "actor_label": str(agent),
              "subject_type_id": ContentType.objects.get_for_model(Case).pk}  # fmt: skip
    params = {"entry_title": f" taken by {agent.get_full_name() or agent}"}
    for name in _PER_CLAIM:
        field = Interaction._meta.get_field(name)  # an attname finds its field too
        params[f"entry_{name}"] = field.get_db_prep_save(values[name], connection)
    return params | _constant_entry_params()


@cache
def _constant_entry_params() -> dict:
    """Every other column from an unsaved model, built once per process (building it cost a
    claim more CPU than PostgreSQL spent on it), so a column added to Interaction gets its
    default here too."""
    entry = Interaction(
        channel=Channel.SYSTEM,
        kind=Kind.CASE_EVENT,
        direction=Direction.INTERNAL,
        status="assigned",
    )
    return {
        f"entry_{field.attname}": field.get_db_prep_save(getattr(entry, field.attname), connection)
        for field in _entry_fields()
        if field.attname not in _ENTRY_FROM_CASE and field.attname not in _PER_CLAIM
    }


def _assign_next_case(agent) -> tuple[Case, int] | None:
    """Lock the most urgent free case of the agent's queues, assign it to them and put the
    claim on the customer's timeline, in one statement; (case, entry id), or None if none.

    The index (`case_unassigned_next`: queue, then urgency) is ordered within one queue, not
    across several: asked for several queues at once, PostgreSQL would read and sort every
    waiting case on every claim (10,000 waiting cases made a claim cost tens of milliseconds).
    So the first try takes the CANDIDATES_PER_QUEUE most urgent ids of each queue (one short
    index range each) and locks the first free one among them; only when concurrent claimers
    hold every candidate does it look at every waiting case. Raw SQL rather than the ORM: a
    claim is one round trip with no BEGIN or COMMIT of its own (one statement is atomic), and
    compiling the ORM's statements cost more CPU than PostgreSQL spent running them (take-next
    is measured by `bench cases`: 20 agents claiming at once on a 2-core machine).
    """
    now = timezone.now()
    params = {
        "statuses": list(CLAIMABLE_STATUSES),
        "per_queue": CANDIDATES_PER_QUEUE,
        "agent": agent.pk,
        "now": now,
        **_entry_params(agent, now),
    }
    for candidates in (_HEADS, _EVERY_WAITING):
        with connection.cursor() as cursor:
            cursor.execute(_claim_sql(candidates), params)
            row = cursor.fetchone()
        if row is not None:
            break
    else:
        return None
    # The case and its customer from one row, as select_related would build them.
    split = len(Case._meta.concrete_fields)
    case = sql.from_row(Case, row[:split])
    customer = sql.from_row(Customer, row[split:-1])
    Case.customer.field.set_cached_value(case, customer)
    return case, row[-1]


def claim_next_case(*, agent) -> Case | None:
    """Give the agent the most urgent unassigned case of their queues; None if none waits.

    Urgency is priority first, then the soonest SLA deadline (paused clocks last), then age.
    The candidate row is locked with `FOR UPDATE SKIP LOCKED`, so agents pressing "Take next"
    at the same moment each get a different case instead of queueing behind one row lock, and
    no case is ever claimed twice. The claim is a timeline entry on the customer; the queue and
    the case hear of it after commit.
    """
    if not roles.can_work_cases(agent):
        raise PermissionDenied("Only service agents and supervisors take cases.")
    claimed = _assign_next_case(agent)
    if claimed is None:
        return None
    case, entry_id = claimed
    case.assignee = agent
    customer_id = case.customer.merged_into_id or case.customer_id
    entry_event = (
        realtime.group_name("customer", customer_id),
        INTERACTION_EVENT,
        {"interaction_id": entry_id},
    )
    realtime.publish_many([entry_event, *case_changed_events(case)])
    return case
