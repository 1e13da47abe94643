"""The contact policy: whether a campaign touch may go to a customer now, and if not, why.

One SQL statement decides it for any set of customers (a whole segment at preflight and at
materialisation, a chunk or a single touch at send time), so the marketer's preflight, the
materialised touches and the send-time check can never disagree about a rule.

Every rule becomes a "blocker" row (customer, rank, reason, detail); a customer's outcome is
their first blocker by rank, else a wait, else "send". The ranks are the fixed precedence
used everywhere (preflight counts, touch reasons, the send check):

  suppressions, which are final:  no_identity, no_consent, topic_conflict
  holds, released when they clear: agent_pause, open_commitment, open_complaint, cool_off,
                                   frequency_cap
  waits, the touch stays pending:  local_window (a local-window campaign outside the customer's
                                   window; only where a touch is made, released or sent: the
                                   preflight counts those customers as "send"), quiet_hours
                                   (both with `not_before`)

A wait is not a Reason: the touch stays pending with an empty reason and the sentence in
`reason_detail`, and goes when `not_before` comes (the release sweep hands it out), re-checked
again then; it expires with the campaign like any waiting touch. The send-time check applies
the local window too, so a touch released from a hold at 3 a.m. in the customer's time zone
waits for their window instead of going at once.

Suppressions come first because they answer "will this ever go?" with no; among holds, what
an agent decided or promised comes before what the policy infers. Absences (no identity, no
consent) are NOT EXISTS anti-joins, never NOT IN, so a NULL in the data cannot flip them.
An approved Override lifts one hold reason for one campaign (suppressions cannot be lifted:
consent is the law, a topic conflict the product's promise).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from campaigns.audience import customers_in_segment
from campaigns.models import (
    HOLD_REASONS,
    SUPPRESS_REASONS,
    Campaign,
    CampaignStatus,
    CommitmentHoldScope,
    ContactPolicy,
    Override,
    OverrideStatus,
    Reason,
    ScheduleMode,
    Touch,
    TouchStatus,
)
from cases.holds import lock_marketing_state
from cases.models import OPEN_STATUSES, CommitmentKind, Status
from customers.models import Channel, ConsentPurpose
from workbench import realtime

SEND = "send"
# The wait for a local-window campaign's window (see the module docstring): not a Reason, so no
# touch stores it; preflight never yields it.
LOCAL_WINDOW = "local_window"
WAITS = frozenset({Reason.QUIET_HOURS.value, LOCAL_WINDOW})
OUTCOMES = (SEND, *(reason.value for reason in Reason))
LIVE_STATUSES = (CampaignStatus.SCHEDULED, CampaignStatus.SENDING)

CONSENT_PURPOSE_FOR_CHANNEL = {
    Channel.EMAIL: ConsentPurpose.MARKETING_EMAIL,
    Channel.SMS: ConsentPurpose.MARKETING_SMS,
    Channel.WHATSAPP: ConsentPurpose.MARKETING_WHATSAPP,
    Channel.FACEBOOK: ConsentPurpose.MARKETING_SOCIAL,
    Channel.INSTAGRAM: ConsentPurpose.MARKETING_SOCIAL,
    Channel.X: ConsentPurpose.MARKETING_SOCIAL,
}

# Blocker ranks in the SQL below follow the precedence of the module docstring: 10 no_identity,
# 20 no_consent, 30 topic_conflict, 40 agent_pause, 50 open_commitment, 60 open_complaint,
# 70 cool_off, 80 frequency_cap; lower wins.
OVERRIDABLE = frozenset(HOLD_REASONS)
_KIND_LABELS = json.dumps(
    {
        CommitmentKind.REFUND: "Refund",
        CommitmentKind.CALLBACK: "Callback",
        CommitmentKind.REPLACEMENT: "Replacement",
        CommitmentKind.FIX: "Fix",
        CommitmentKind.CREDIT: "Credit",
        CommitmentKind.OTHER: "Something",
    }
)
_PARAM = re.compile(r"%(%|s)")


def current_policy() -> ContactPolicy:
    """The rules in force: the highest version (migration 0002 creates version 1).

    Should the table ever be empty (a flushed database), the shipped defaults apply, unsaved
    (version 0): marketing is never checked against no policy at all.
    """
    policy = ContactPolicy.objects.order_by("-version").first()
    if policy is None:
        policy = ContactPolicy(version=0, **FIRST_POLICY)
    return policy


# Version 1, as migration 0002 makes it and `ensure_first_policy` remakes it after a flush.
FIRST_POLICY = {
    "complaint_priorities": ["high", "urgent"],
    "complaint_topics": ["complaint"],
    "change_note": "First version: the defaults Workbench ships with.",
}


def ensure_first_policy(*, using: str = "default") -> None:
    """A post_migrate hook: a flushed database (tests) loses migration 0002's version 1, and
    every page that shows "policy vN" expects one."""
    if not ContactPolicy.objects.using(using).exists():
        ContactPolicy.objects.using(using).create(version=1, **FIRST_POLICY)


@dataclass
class Preflight:
    """A campaign's audience split by outcome ("send" or a Reason value) under one policy."""

    total: int
    counts: dict[str, int]
    policy_version: int | None
    computed_at: datetime
    details: dict = field(default_factory=dict)

    def count(self, outcome: str) -> int:
        return self.counts.get(outcome, 0)


# --- the one statement ---------------------------------------------------------------------------


@cache
def _database_timezones() -> tuple[str, ...]:
    """Time zone names PostgreSQL knows (a customer's unknown one falls back to UTC instead of
    failing the whole statement). Read once per process."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_timezone_names")
        return tuple(sorted(row[0] for row in cursor.fetchall()))


def _named(sql: str, params, prefix: str) -> tuple[str, dict]:
    """Turn a Django-compiled query's positional %s into named %(prefix_n)s parameters."""
    values = list(params)
    named: dict = {}
    counter = iter(range(len(values)))

    def swap(match: re.Match) -> str:
        if match.group(1) == "%":
            return "%%"
        number = next(counter)
        named[f"{prefix}_{number}"] = values[number]
        return f"%({prefix}_{number})s"

    return _PARAM.sub(swap, sql), named


def _segment_audience(
    campaign: Campaign, now: datetime, customer_id: int | None = None
) -> tuple[str, dict]:
    query = customers_in_segment(campaign.segment.definition, now=now)
    if customer_id is not None:
        query = query.filter(pk=customer_id)
    query = query.values("id", "timezone")
    sql, params = query.query.sql_with_params()
    sql, named = _named(sql, params, "seg")
    return f"SELECT s.id, s.timezone, false AS gone FROM ({sql}) s", named  # noqa: S608


def _customers_audience(customer_ids: list[int]) -> tuple[str, dict]:
    # Merged and erased customers are "gone": nothing may be sent to a tombstone.
    return (
        "SELECT c.id, c.timezone, (c.merged_into_id IS NOT NULL OR c.erased_at IS NOT NULL) "
        "AS gone FROM customers_customer c WHERE c.id = ANY(%(audience_ids)s)",
        {"audience_ids": list(customer_ids)},
    )


def _quiet_sql(policy: ContactPolicy, local: str) -> tuple[str, str]:
    """SQL for "is local time `local` (a timestamp) in quiet hours" and "when do they end"."""
    start, end = policy.quiet_hours_start, policy.quiet_hours_end
    if start == end:
        return "false", local
    t = f"({local})::time"
    if start < end:
        inside = f"({t} >= %(quiet_start)s::time AND {t} < %(quiet_end)s::time)"
        release = f"(({local})::date + %(quiet_end)s::time)"
    else:  # across midnight, e.g. 21:00-08:00
        inside = f"({t} >= %(quiet_start)s::time OR {t} < %(quiet_end)s::time)"
        release = (
            f"(CASE WHEN {t} < %(quiet_end)s::time THEN ({local})::date + %(quiet_end)s::time "
            f"ELSE ({local})::date + 1 + %(quiet_end)s::time END)"
        )
    return inside, release


def _window_start_sql(campaign: Campaign, local: str, use_window: bool) -> str:
    """The first local moment at or after `local` inside the campaign's local time window."""
    start, end = campaign.window_start_hour, campaign.window_end_hour
    if not use_window or campaign.schedule_mode != ScheduleMode.LOCAL_WINDOW:
        return local
    if start is None or end is None or start == end:
        return local
    hour = f"extract(hour FROM {local})"
    begin = f"(({local})::date + make_interval(hours => %(window_start)s))"
    if start < end:
        return (
            f"(CASE WHEN {hour} >= %(window_start)s AND {hour} < %(window_end)s THEN {local} "
            f"WHEN {hour} < %(window_start)s THEN {begin} ELSE {begin} + interval '1 day' END)"
        )
    return (
        f"(CASE WHEN {hour} >= %(window_start)s OR {hour} < %(window_end)s THEN {local} "
        f"ELSE {begin} END)"
    )


def _is_windowed(campaign: Campaign) -> bool:
    start, end = campaign.window_start_hour, campaign.window_end_hour
    return (
        campaign.schedule_mode == ScheduleMode.LOCAL_WINDOW
        and start is not None
        and end is not None
        and start != end
    )


def _blockers(
    campaign: Campaign, policy: ContactPolicy, overridden: frozenset[str]
) -> list[tuple[str, str]]:
    """(reason, SQL) of each rule that applies under this policy, in precedence order. Each
    SQL yields (customer_id, rank, reason, detail, sort_at) for the audience's blocked rows."""
    topics = list(campaign.topics or [])
    blockers = [
        (
            Reason.NO_IDENTITY,
            "SELECT a.id, 10, 'no_identity', %(no_identity_detail)s::text, "
            "NULL::timestamptz FROM audience a WHERE NOT EXISTS (SELECT 1 FROM "
            "customers_identity i WHERE i.customer_id = a.id AND i.channel = %(channel)s)",
        )
    ]
    if CONSENT_PURPOSE_FOR_CHANNEL.get(campaign.channel) is None:
        blockers.append(
            (
                Reason.NO_CONSENT,
                "SELECT a.id, 20, 'no_consent', %(no_consent_detail)s::text, "
                "NULL::timestamptz FROM audience a",
            )
        )
    else:
        # The latest row for the purpose wins: a grant with no later row for the same purpose.
        blockers.append(
            (
                Reason.NO_CONSENT,
                "SELECT a.id, 20, 'no_consent', %(no_consent_detail)s::text, "
                "NULL::timestamptz FROM audience a WHERE NOT EXISTS (SELECT 1 FROM "
                "customers_consent k WHERE k.customer_id = a.id AND k.purpose = %(purpose)s "
                "AND k.is_granted AND NOT EXISTS (SELECT 1 FROM customers_consent later "
                "WHERE later.customer_id = k.customer_id AND later.purpose = k.purpose AND "
                "(later.recorded_at > k.recorded_at OR (later.recorded_at = k.recorded_at "
                "AND later.id > k.id))))",
            )
        )
    if policy.is_topic_conflict_on and topics:
        blockers.append(
            (
                Reason.TOPIC_CONFLICT,
                "SELECT k.customer_id, 30, 'topic_conflict', "
                "'Open case #' || k.id || ' is about ' || array_to_string(ARRAY(SELECT "
                "unnest(k.topics) INTERSECT SELECT unnest(%(topics)s::varchar[]) ORDER BY 1), "
                "', '), k.created_at FROM cases_case k JOIN audience a ON a.id = k.customer_id "
                "WHERE k.status = ANY(%(open_statuses)s) AND k.topics && %(topics)s::varchar[]",
            )
        )
    if policy.is_agent_pause_on:
        blockers.append(
            (
                Reason.AGENT_PAUSE,
                "SELECT k.customer_id, 40, 'agent_pause', 'Marketing paused "
                "by an agent until case #' || k.id || ' is solved', k.created_at FROM "
                "cases_case k JOIN audience a ON a.id = k.customer_id WHERE k.status = "
                "ANY(%(open_statuses)s) AND k.pauses_marketing",
            )
        )
    if policy.commitment_hold_scope != CommitmentHoldScope.OFF:
        overlap = ""
        if policy.commitment_hold_scope == CommitmentHoldScope.OVERLAPPING_TOPICS:
            # A commitment or campaign without topics (empty or NULL) overlaps everything:
            # when we cannot tell what a promise is about, service wins.
            overlap = (
                " AND (coalesce(cardinality(m.topics), 0) = 0 OR "
                "cardinality(%(topics)s::varchar[]) = 0 OR m.topics && %(topics)s::varchar[])"
            )
        blockers.append(
            (
                Reason.OPEN_COMMITMENT,
                "SELECT m.customer_id, 50, 'open_commitment', "
                "(%(kind_labels)s::jsonb ->> m.kind) || ' promised on case #' || m.case_id || "
                "', due ' || to_char(m.due_at AT TIME ZONE 'UTC', 'FMDD Mon YYYY'), m.due_at "
                "FROM cases_commitment m JOIN audience a ON a.id = m.customer_id "
                "WHERE m.status = 'open'" + overlap,
            )
        )
    complaint = _complaint_sql(policy)
    if complaint:
        blockers.append(
            (
                Reason.OPEN_COMPLAINT,
                f"""SELECT k.customer_id, 60, 'open_complaint',
                'Open complaint: case #' || k.id || ' (' || k.priority || ' priority)',
                k.created_at FROM cases_case k JOIN audience a ON a.id = k.customer_id
                WHERE k.status = ANY(%(open_statuses)s) AND {complaint}""",  # noqa: S608
            )
        )
    if policy.cool_off_days > 0:
        if complaint:
            blockers.append(
                (
                    Reason.COOL_OFF,
                    f"""SELECT k.customer_id, 70, 'cool_off', 'Cool-off until ' ||
                    to_char((k.solved_at + %(cool_off)s) AT TIME ZONE 'UTC', 'FMDD Mon YYYY')
                    || ' after complaint case #' || k.id || ' was solved', k.solved_at
                    FROM cases_case k JOIN audience a ON a.id = k.customer_id
                    WHERE k.status = ANY(%(solved_statuses)s)
                    AND k.solved_at > %(cool_off_since)s AND {complaint}""",  # noqa: S608
                )
            )
        blockers.append(
            (
                Reason.COOL_OFF,
                "SELECT m.customer_id, 70, 'cool_off', 'Cool-off until ' || "
                "to_char((m.resolved_at + %(cool_off)s) AT TIME ZONE 'UTC', 'FMDD Mon YYYY') || "
                "' after a broken ' || lower(%(kind_labels)s::jsonb ->> m.kind) || "
                "' commitment on case #' || m.case_id, m.resolved_at FROM cases_commitment m "
                "JOIN audience a ON a.id = m.customer_id WHERE m.status = 'broken' AND "
                "m.resolved_at > %(cool_off_since)s",
            )
        )
    if policy.frequency_cap_touches > 0:
        blockers.append(
            (
                Reason.FREQUENCY_CAP,
                "SELECT t.customer_id, 80, 'frequency_cap', count(*) || "
                "' marketing touches sent in the last ' || %(cap_days)s::int || ' days', "
                "max(t.sent_at) FROM campaigns_touch t JOIN audience a ON a.id = t.customer_id "
                "WHERE t.status = 'sent' AND t.sent_at > %(cap_since)s "
                "GROUP BY t.customer_id HAVING count(*) >= %(cap_touches)s",
            )
        )
    return [(reason, sql) for reason, sql in blockers if reason not in overridden]


def _complaint_sql(policy: ContactPolicy) -> str:
    parts = []
    if policy.complaint_priorities:
        parts.append("k.priority = ANY(%(complaint_priorities)s)")
    if policy.complaint_topics:
        parts.append("k.topics && %(complaint_topics)s::varchar[]")
    return f"({' OR '.join(parts)})" if parts else ""


def _outcomes_sql(
    *,
    campaign: Campaign,
    policy: ContactPolicy,
    now: datetime,
    audience: tuple[str, dict],
    overridden: frozenset[str],
    use_window: bool,
    window_waits: bool = False,
) -> tuple[str, dict]:
    """The statement: one row (customer_id, outcome, detail, not_before, timezone) per audience
    member; `timezone` is the one the customer's local times were computed in.

    `use_window`: a local-window campaign's `not_before` is the first moment of the customer's
    window. `window_waits` (with it): outside the window the outcome is the LOCAL_WINDOW wait,
    not "send", so the caller keeps the touch pending instead of sending it now.
    """
    audience_sql, audience_params = audience
    purpose = CONSENT_PURPOSE_FOR_CHANNEL.get(campaign.channel)
    channel_label = Channel(campaign.channel).label if campaign.channel in Channel.values else ""
    params = {
        **audience_params,
        "channel": campaign.channel,
        "purpose": purpose,
        "topics": list(campaign.topics or []),
        "open_statuses": list(OPEN_STATUSES),
        "solved_statuses": [Status.SOLVED, Status.CLOSED],
        "kind_labels": _KIND_LABELS,
        "complaint_priorities": list(policy.complaint_priorities or []),
        "complaint_topics": list(policy.complaint_topics or []),
        "cool_off": timedelta(days=policy.cool_off_days),
        "cool_off_since": now - timedelta(days=policy.cool_off_days),
        "cap_touches": policy.frequency_cap_touches,
        "cap_days": policy.frequency_cap_days,
        "cap_since": now - timedelta(days=policy.frequency_cap_days),
        "quiet_start": policy.quiet_hours_start,
        "quiet_end": policy.quiet_hours_end,
        "window_start": campaign.window_start_hour,
        "window_end": campaign.window_end_hour,
        "window_wait_detail": "Waiting for the customer's local send window, from ",
        "now": now,
        "timezones": list(_database_timezones()),
        "no_identity_detail": f"No {channel_label or campaign.channel} identity",
        "no_consent_detail": (
            f"No consent to {ConsentPurpose(purpose).label.lower()}"
            if purpose
            else f"Marketing on {channel_label or campaign.channel} has no consent purpose"
        ),
    }
    blockers = _blockers(campaign, policy, overridden)
    union = "\nUNION ALL\n".join(sql for _, sql in blockers)
    if Reason.QUIET_HOURS in overridden:
        quiet_now, quiet_start, release = "false", "false", "w.ls"
    else:
        quiet_now, _ = _quiet_sql(policy, "l.lt")
        quiet_start, quiet_release = _quiet_sql(policy, "w.ls")
        release = f"(CASE WHEN {quiet_start} THEN {quiet_release} ELSE w.ls END)"
    window_start = _window_start_sql(campaign, "l.lt", use_window)
    # Outside the window the first window moment is later than now, local time (and `r.at`,
    # the window start moved past any quiet hours, is when the touch may go).
    is_window_a_wait = use_window and window_waits and _is_windowed(campaign)
    window_now = "w.ls > l.lt" if is_window_a_wait else "false"
    sql = f"""
WITH audience AS MATERIALIZED (
    SELECT s.id, coalesce(z.name, 'UTC') AS tz, s.gone
    FROM ({audience_sql}) s
    LEFT JOIN unnest(%(timezones)s::text[]) AS z(name) ON z.name = s.timezone
),
blockers (customer_id, rank, reason, detail, sort_at) AS (
    {union}
),
first_blocker AS (
    SELECT DISTINCT ON (customer_id) customer_id, reason, detail
    FROM blockers ORDER BY customer_id, rank, sort_at NULLS LAST, detail
)
SELECT a.id AS customer_id,
       CASE WHEN a.gone THEN 'no_identity'
            WHEN fb.reason IS NOT NULL THEN fb.reason
            WHEN {window_now} THEN 'local_window'
            WHEN {quiet_now} THEN 'quiet_hours'
            ELSE 'send' END AS outcome,
       CASE WHEN a.gone THEN 'The customer was merged or erased'
            WHEN fb.reason IS NOT NULL THEN fb.detail
            WHEN {window_now} THEN %(window_wait_detail)s || to_char(r.at, 'FMDD Mon HH24:MI')
                 || ' local time (' || a.tz || ')'
            WHEN {quiet_now} THEN 'Quiet hours until ' || to_char(r.at, 'HH24:MI')
                 || ' local time (' || a.tz || ')'
            ELSE '' END AS detail,
       CASE WHEN r.at > l.lt THEN r.at AT TIME ZONE a.tz END AS not_before,
       a.tz AS timezone
FROM audience a
CROSS JOIN LATERAL (SELECT (%(now)s::timestamptz AT TIME ZONE a.tz) AS lt) l
CROSS JOIN LATERAL (SELECT {window_start} AS ls) w
CROSS JOIN LATERAL (SELECT {release} AS at) r
LEFT JOIN first_blocker fb ON fb.customer_id = a.id
"""  # noqa: S608
    return sql, params


def _execute(cursor, sql: str, params: dict) -> None:
    """Run a policy statement inside the caller's transaction, JIT off for it.

    The statement has many small expressions and PostgreSQL's row estimates for its CTE are
    rough, so the planner often turns on JIT: compiling it cost more (seconds at a million
    customers, ~100 ms for one) than running it. SET LOCAL ends with the transaction.
    """
    cursor.execute("SET LOCAL jit = off")
    cursor.execute(sql, params)


def _overridden(campaign: Campaign) -> frozenset[str]:
    if campaign.pk is None:
        return frozenset()
    reasons = Override.objects.filter(
        campaign_id=campaign.pk, status=OverrideStatus.APPROVED
    ).values_list("reason", flat=True)
    return frozenset(reason for reason in reasons if reason in OVERRIDABLE)


# --- preflight -----------------------------------------------------------------------------------


def preflight(
    *, campaign: Campaign, now: datetime | None = None, policy: ContactPolicy | None = None
) -> Preflight:
    """The campaign's audience split by outcome, computed in one statement; stores nothing.

    `policy` may be an unsaved ContactPolicy (the CCO's console previews a change with it);
    default: the current one. Approved overrides of the campaign apply, as at send time.
    Quiet hours count as their own outcome: those touches wait, then go.
    """
    now = now or timezone.now()
    policy = policy or current_policy()
    sql, params = _outcomes_sql(
        campaign=campaign,
        policy=policy,
        now=now,
        audience=_segment_audience(campaign, now),
        overridden=_overridden(campaign),
        use_window=True,
    )
    with transaction.atomic(), connection.cursor() as cursor:
        grouped = f"SELECT outcome, count(*) FROM ({sql}) o GROUP BY outcome"  # noqa: S608
        _execute(cursor, grouped, params)
        counts = {outcome: count for outcome, count in cursor.fetchall()}
    return Preflight(
        total=sum(counts.values()),
        counts=counts,
        policy_version=policy.version,
        computed_at=now,
    )


def preflight_customers(
    *,
    campaign: Campaign,
    outcome: str,
    after_id: int = 0,
    limit: int = 50,
    now: datetime | None = None,
    policy: ContactPolicy | None = None,
) -> list[tuple[int, str, str]]:
    """One page of the preflight drill-down: (customer_id, display_name, detail), by id after
    `after_id`. The detail names the rule and the case or commitment kind, never a case's or a
    note's text."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    now = now or timezone.now()
    policy = policy or current_policy()
    sql, params = _outcomes_sql(
        campaign=campaign,
        policy=policy,
        now=now,
        audience=_segment_audience(campaign, now),
        overridden=_overridden(campaign),
        use_window=True,
    )
    params |= {"drill_outcome": outcome, "drill_after": after_id, "drill_limit": max(0, limit)}
    with transaction.atomic(), connection.cursor() as cursor:
        _execute(
            cursor,
            f"""SELECT o.customer_id, c.display_name, o.detail FROM ({sql}) o
            JOIN customers_customer c ON c.id = o.customer_id
            WHERE o.outcome = %(drill_outcome)s AND o.customer_id > %(drill_after)s
            ORDER BY o.customer_id LIMIT %(drill_limit)s""",  # noqa: S608
            params,
        )
        return [(pk, name or f"Customer {pk}", detail) for pk, name, detail in cursor.fetchall()]


# --- one customer, campaigns to come ------------------------------------------------------------


@dataclass(frozen=True)
class Forecast:
    """What a scheduled campaign will do to one customer, as the policy says now: `outcome` is
    "send", a wait (LOCAL_WINDOW, quiet hours: it goes at `send_at`), or a Reason value (held
    or suppressed, `detail` says why in the policy's words: case numbers and kinds, never a
    case's text). `send_at` is aware (UTC); `timezone` is the customer's, for showing it."""

    campaign: Campaign
    outcome: str
    detail: str
    send_at: datetime
    timezone: str

    @property
    def is_held(self) -> bool:
        return self.outcome in OVERRIDABLE and self.outcome not in WAITS

    @property
    def is_suppressed(self) -> bool:
        return self.outcome in SUPPRESS_REASONS

    @property
    def reason_label(self) -> str:
        return Reason(self.outcome).label if self.outcome in Reason.values else ""


def forecast_for_customer(
    *,
    customer_id: int,
    campaigns: list[Campaign],
    now: datetime,
    policy: ContactPolicy | None = None,
) -> list[Forecast]:
    """For each campaign not yet materialised (scheduled: it has no touches yet), whether the
    customer is in its segment and, if so, the policy's verdict for them when it starts.

    The same statement as preflight and the send check, its audience the segment's query
    filtered to this one customer, evaluated at the campaign's start (or now, if that passed)
    with the local window applied: one statement per campaign, all in one transaction, plus
    one query for the campaigns' approved overrides. Campaigns whose segment leaves the
    customer out are left out; so is one whose segment no longer validates (it cannot start
    either). The agent sees it before the touch exists; nothing is stored.
    """
    campaigns = [campaign for campaign in campaigns if campaign.materialised_at is None]
    if not campaigns:
        return []
    policy = policy or current_policy()
    overridden: dict[int, set[str]] = {campaign.pk: set() for campaign in campaigns}
    approved = Override.objects.filter(
        campaign_id__in=list(overridden), status=OverrideStatus.APPROVED
    ).values_list("campaign_id", "reason")
    for campaign_id, reason in approved:
        if reason in OVERRIDABLE:
            overridden[campaign_id].add(reason)
    forecasts = []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL jit = off")  # as in _execute, once for all the statements
        for campaign in campaigns:
            at = max(now, campaign.scheduled_at or now)
            try:
                audience = _segment_audience(campaign, at, customer_id)
            except ValidationError:
                continue
            sql, params = _outcomes_sql(
                campaign=campaign,
                policy=policy,
                now=at,
                audience=audience,
                overridden=frozenset(overridden[campaign.pk]),
                use_window=True,
                window_waits=True,
            )
            cursor.execute(
                f"SELECT outcome, detail, not_before, timezone FROM ({sql}) o",  # noqa: S608
                params,
            )
            row = cursor.fetchone()
            if row is None:
                continue
            outcome, detail, not_before, zone = row
            forecasts.append(
                Forecast(
                    campaign=campaign,
                    outcome=outcome,
                    detail=detail or "",
                    send_at=not_before if outcome in WAITS and not_before else at,
                    timezone=zone,
                )
            )
    return forecasts


# --- materialisation -----------------------------------------------------------------------------


def materialise_touches(*, campaign: Campaign, now: datetime) -> int:
    """Create one Touch per customer of the segment, in one INSERT … SELECT; return how many.

    Each touch starts as the policy says now: pending (with `not_before` and the wait's sentence
    for quiet hours or the customer's local window), held with its reason, or suppressed with
    its reason. ON CONFLICT
    DO NOTHING on (campaign, customer) makes a second call insert nothing, and a crash between
    the insert and the stamp harmless. Stamps `campaign.materialised_at`.
    """
    policy = current_policy()
    sql, params = _outcomes_sql(
        campaign=campaign,
        policy=policy,
        now=now,
        audience=_segment_audience(campaign, now),
        overridden=_overridden(campaign),
        use_window=True,
        window_waits=True,
    )
    params |= {
        "touch_campaign": campaign.pk,
        "touch_now": now,
        "suppress": [reason.value for reason in SUPPRESS_REASONS],
    }
    with transaction.atomic():
        with connection.cursor() as cursor:
            _execute(
                cursor,
                f"""
INSERT INTO campaigns_touch (campaign_id, customer_id, status, reason, reason_detail,
    not_before, created_at, updated_at, held_at, sent_at, interaction_id, attempts, error)
SELECT %(touch_campaign)s, o.customer_id,
       CASE WHEN o.outcome IN ('send', 'quiet_hours', 'local_window') THEN 'pending'
            WHEN o.outcome = ANY(%(suppress)s) THEN 'suppressed' ELSE 'held' END,
       CASE WHEN o.outcome IN ('send', 'quiet_hours', 'local_window') THEN '' ELSE o.outcome END,
       left(o.detail, 300),
       CASE WHEN o.outcome IN ('send', 'quiet_hours', 'local_window') THEN o.not_before END,
       %(touch_now)s, %(touch_now)s,
       CASE WHEN o.outcome NOT IN ('send', 'quiet_hours', 'local_window')
            AND o.outcome <> ALL(%(suppress)s)
            THEN %(touch_now)s::timestamptz END,
       NULL, NULL, 0, ''
FROM ({sql}) o
ON CONFLICT (campaign_id, customer_id) DO NOTHING
""",  # noqa: S608
                params,
            )
            inserted = cursor.rowcount
        campaign.materialised_at = now
        Campaign.objects.filter(pk=campaign.pk).update(materialised_at=now)
    return inserted


# --- the send-time check -------------------------------------------------------------------------


def evaluate_touches(
    *, touches: list[Touch], now: datetime, policy: ContactPolicy | None = None
) -> dict[int, tuple[str, str] | None]:
    """`evaluate_touch` for many touches of one campaign in one statement: {touch id: verdict}.

    For the dispatcher's chunks: lock the customers (`lock_marketing_state`, in id order) first.
    A local-window campaign's touch outside the customer's window gets the LOCAL_WINDOW wait
    (its `not_before` set to the window's next opening), like quiet hours.
    """
    if not touches:
        return {}
    campaign = touches[0].campaign
    if any(touch.campaign_id != campaign.pk for touch in touches):
        raise ValueError("evaluate_touches takes touches of one campaign")
    policy = policy or current_policy()
    sql, params = _outcomes_sql(
        campaign=campaign,
        policy=policy,
        now=now,
        audience=_customers_audience([touch.customer_id for touch in touches]),
        overridden=_overridden(campaign),
        use_window=True,
        window_waits=True,
    )
    with transaction.atomic(), connection.cursor() as cursor:
        _execute(cursor, sql, params)
        rows = {pk: (outcome, detail, not_before) for pk, outcome, detail, not_before, _ in cursor}
    verdicts: dict[int, tuple[str, str] | None] = {}
    for touch in touches:
        outcome, detail, not_before = rows[touch.customer_id]
        if outcome == SEND:
            verdicts[touch.pk] = None
            continue
        if outcome in WAITS:
            touch.not_before = not_before
        verdicts[touch.pk] = (outcome, detail)
    return verdicts


def evaluate_touch(
    *, touch: Touch, now: datetime, policy: ContactPolicy | None = None
) -> tuple[str, str] | None:
    """None when the touch may be sent now, else (Reason value or LOCAL_WINDOW, a sentence a
    person understands, e.g. "Refund promised on case #12, due 3 Dec 2026").

    The send-time check: call it inside the transaction that marks the touch sent, after
    `cases.holds.lock_marketing_state(touch.customer_id)`, so a commitment committed before the
    lock is seen and one recorded after waits for the send to commit. Approved overrides of the
    campaign lift their reason. For a wait (quiet hours, the customer's local window) it also
    sets `touch.not_before` (unsaved) to the moment it ends in the customer's time zone: save it
    and keep the touch pending.
    """
    return evaluate_touches(touches=[touch], now=now, policy=policy)[touch.pk]


# --- re-evaluation when service changes something ------------------------------------------------


def reevaluate_customer_touches(*, customer_id: int, now: datetime) -> int:
    """Re-check the customer's pending and held touches of live campaigns; return how many
    changed. Pending becomes held when a hold now applies (a commitment was just recorded),
    held becomes pending when its reason cleared (the dispatcher then sends it, re-checked
    again), a new suppression suppresses for good.

    Touches a dispatcher holds locked are skipped: it is checking them under the same customer
    lock right now. Lock order as everywhere: touches first, then the customer.
    """
    changed_campaigns: set[int] = set()
    changed = 0
    with transaction.atomic():
        touches = list(
            Touch.objects.select_related("campaign")
            .select_for_update(skip_locked=True, of=("self",))
            .filter(
                customer_id=customer_id,
                status__in=(TouchStatus.PENDING, TouchStatus.HELD),
                campaign__status__in=LIVE_STATUSES,
            )
            .order_by("id")
        )
        if not touches:
            return 0
        lock_marketing_state(customer_id)
        policy = current_policy()
        for touch in touches:
            before = (touch.status, touch.reason, touch.reason_detail, touch.not_before)
            verdict = evaluate_touch(touch=touch, now=now, policy=policy)
            _apply_verdict(touch, verdict, now=now)
            if (touch.status, touch.reason, touch.reason_detail, touch.not_before) != before:
                touch.save(
                    update_fields=[
                        "status",
                        "reason",
                        "reason_detail",
                        "not_before",
                        "held_at",
                        "updated_at",
                    ]
                )
                changed += 1
                changed_campaigns.add(touch.campaign_id)
        for campaign_id in sorted(changed_campaigns):
            publish_campaign_progress(campaign_id)
    return changed


def _apply_verdict(touch: Touch, verdict: tuple[str, str] | None, *, now: datetime) -> None:
    """Set the touch's status and reason from a verdict (a wait: pending, `not_before` set by
    evaluate_touch; a touch released from a hold with no wait may go at once)."""
    if verdict is None or verdict[0] in WAITS:
        if touch.status == TouchStatus.HELD and verdict is None:
            touch.not_before = None
        touch.status, touch.reason = TouchStatus.PENDING, ""
        touch.reason_detail = verdict[1][:300] if verdict else ""
        return
    reason, detail = verdict
    if reason in SUPPRESS_REASONS:
        touch.status = TouchStatus.SUPPRESSED
    else:
        if touch.status != TouchStatus.HELD:
            touch.held_at = now
        touch.status = TouchStatus.HELD
    touch.reason, touch.reason_detail = reason, detail[:300]


def release_held_touches(*, campaign: Campaign, now: datetime) -> int:
    """Move the campaign's held touches whose reason cleared back to pending, in one statement
    (the beat task's sweep: a cool-off or a frequency window ends without any event). Also
    refreshes the reason of those still held. Returns how many were released. A released touch
    that must wait (quiet hours, outside the customer's local window) is pending with its
    `not_before`; the sweep hands it out when that comes. The dispatcher
    re-checks each under the customer lock, so a stale read here can only delay, never send.
    """
    policy = current_policy()
    audience = (
        "SELECT c.id, c.timezone, (c.merged_into_id IS NOT NULL OR c.erased_at IS NOT NULL) "
        "AS gone FROM customers_customer c JOIN campaigns_touch t ON t.customer_id = c.id "
        "WHERE t.campaign_id = %(release_campaign)s AND t.status = 'held'",
        {"release_campaign": campaign.pk},
    )
    sql, params = _outcomes_sql(
        campaign=campaign,
        policy=policy,
        now=now,
        audience=audience,
        overridden=_overridden(campaign),
        use_window=True,
        window_waits=True,
    )
    params |= {"release_now": now, "suppress": [r.value for r in SUPPRESS_REASONS]}
    with transaction.atomic(), connection.cursor() as cursor:
        _execute(
            cursor,
            f"""
WITH o AS ({sql})
UPDATE campaigns_touch t
SET status = CASE WHEN o.outcome IN ('send', 'quiet_hours', 'local_window') THEN 'pending'
                  WHEN o.outcome = ANY(%(suppress)s) THEN 'suppressed' ELSE 'held' END,
    reason = CASE WHEN o.outcome IN ('send', 'quiet_hours', 'local_window') THEN ''
                  ELSE o.outcome END,
    reason_detail = left(o.detail, 300),
    not_before = CASE WHEN o.outcome IN ('quiet_hours', 'local_window') THEN o.not_before END,
    updated_at = %(release_now)s
FROM o
WHERE t.campaign_id = %(release_campaign)s AND t.customer_id = o.customer_id
  AND t.status = 'held' AND (t.reason IS DISTINCT FROM o.outcome OR t.reason_detail <> o.detail)
RETURNING t.status
""",  # noqa: S608
            params,
        )
        released = sum(1 for (status,) in cursor.fetchall() if status == TouchStatus.PENDING)
        if released:
            publish_campaign_progress(campaign.pk)
    return released


def publish_campaign_progress(campaign_id: int) -> None:
    """Tell the campaign's page, after commit, that its counts moved."""
    if realtime.fragment_for("campaign.progress") is None:
        return  # no page renders it in this process (a worker without the pages' module)
    realtime.publish(
        realtime.group_name("campaign", campaign_id), "campaign.progress", campaign_id=campaign_id
    )


def on_marketing_state_changed(customer_id: int) -> None:
    """The cases.holds listener (registered in CampaignsConfig.ready)."""
    reevaluate_customer_touches(customer_id=customer_id, now=timezone.now())
