"""The SLA clock: business-minute arithmetic on a queue's calendar, due times, and breaches.

One clock runs per case while it is new or open, pauses while it is pending (the minutes used
so far are banked in `sla_minutes_used`) and stops when it is solved or closed. Both targets of
the policy — first response and resolution — count down on that clock, in business minutes of
the queue's calendar (working hours in its own time zone, minus holidays). Arithmetic is done
on real instants (UTC), so a day when the clocks change has exactly the working minutes it
really had.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.db import transaction
from django.db.models import Q

from cases.models import BusinessCalendar, Case, SlaPolicy, Status
from customers.identity import live_customer
from customers.models import Channel, Direction, Kind
from customers.timeline import record_interaction
from workbench import realtime

DAY_KEYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
RUNNING_STATUSES = (Status.NEW, Status.OPEN)
# A calendar that never opens would make the search for a due time endless: give up after this.
MAX_SEARCH_DAYS = 3 * 366
BREACH_BATCH = 200
CASE_CHANGED = "case.changed"
QUEUE_CHANGED = "queue.changed"


def _parse_time(value: str) -> time | None:
    """ "09:00" → 09:00; "24:00" → None, meaning the end of the day."""
    hours, minutes = (int(part) for part in value.split(":"))
    if (hours, minutes) == (24, 0):
        return None
    return time(hours, minutes)


def _local(day: date, at: time | None, zone: ZoneInfo) -> datetime:
    if at is None:
        return datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    return datetime.combine(day, at, tzinfo=zone)


def _windows_on(calendar: BusinessCalendar, day: date, zone: ZoneInfo) -> list[tuple]:
    """The working windows that start on a local day, as aware datetimes; none on a holiday.

    A window whose end is not after its start (["22:00", "06:00"]) runs overnight into the
    next day.
    """
    if day in _holidays(calendar):
        return []
    windows = []
    for start_text, end_text in calendar.working_hours.get(DAY_KEYS[day.weekday()], []):
        starts, ends = _parse_time(start_text), _parse_time(end_text)
        start = _local(day, starts, zone)
        end = _local(day, ends, zone)
        if end <= start:
            end = _local(day + timedelta(days=1), ends, zone)
        # Arithmetic between datetimes of one zone is wall-clock arithmetic in Python: work in
        # UTC so a window over a clock change is as long as it really is.
        windows.append((start.astimezone(UTC), end.astimezone(UTC)))
    return sorted(windows)


def _holidays(calendar: BusinessCalendar) -> frozenset[date]:
    cached = getattr(calendar, "_holiday_set", None)
    if cached is None:
        cached = frozenset(calendar.holidays or ())
        calendar._holiday_set = cached
    return cached


def _is_always_open(calendar: BusinessCalendar) -> bool:
    # No working hours at all means the queue never sleeps: every minute counts.
    return not any(calendar.working_hours.get(key) for key in DAY_KEYS)


def _windows_from(calendar: BusinessCalendar, since: datetime) -> Iterator[tuple]:
    """Working windows in time order, starting with any still open at `since`."""
    zone = ZoneInfo(calendar.timezone)
    # From the day before: an overnight window that began yesterday may still be running.
    day = since.astimezone(zone).date() - timedelta(days=1)
    for offset in range(MAX_SEARCH_DAYS):
        for start, end in _windows_on(calendar, day + timedelta(days=offset), zone):
            if end > since:
                yield start, end
    raise ValueError(f"calendar {calendar.name!r} has no working time in {MAX_SEARCH_DAYS} days")


def add_business_minutes(calendar: BusinessCalendar, start: datetime, minutes: int) -> datetime:
    """The instant `minutes` business minutes after `start` on the calendar.

    Time outside working hours does not count: a start at night counts from the next opening.
    Zero minutes returns `start` itself.
    """
    if minutes < 0:
        raise ValueError("minutes must not be negative")
    start = start.astimezone(UTC)
    if minutes == 0:
        return start
    if _is_always_open(calendar):
        return start + timedelta(minutes=minutes)
    remaining = timedelta(minutes=minutes)
    for window_start, window_end in _windows_from(calendar, start):
        begin = max(start, window_start)
        available = window_end - begin
        if remaining <= available:
            return begin + remaining
        remaining -= available
    raise AssertionError("unreachable: _windows_from raises when it runs out")


def business_minutes_between(calendar: BusinessCalendar, start: datetime, end: datetime) -> int:
    """Whole business minutes from `start` to `end` (0 when end is not after start)."""
    if end <= start:
        return 0
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if _is_always_open(calendar):
        return int((end - start).total_seconds() // 60)
    total = timedelta()
    for window_start, window_end in _windows_from(calendar, start):
        if window_start >= end:
            break
        total += min(end, window_end) - max(start, window_start)
    return int(total.total_seconds() // 60)


def policy_for(case: Case) -> SlaPolicy | None:
    """The SLA policy of the case's queue and priority, or None when the queue sets none."""
    return SlaPolicy.objects.filter(queue_id=case.queue_id, priority=case.priority).first()


def apply_sla(case: Case, *, now: datetime) -> list[str]:
    """Bring the case's SLA clock and due times in line with its status and policy.

    New/open: the clock runs (started now if it was not running) and the due times are what is
    left of each target after the banked minutes. Pending: the minutes used are banked and the
    due times are cleared (a paused deadline is not a deadline). Solved/closed: the minutes are
    banked and the clock stops; the due times stay as the record of what the targets were.
    Safe to call repeatedly. Changes the case in memory only and returns the names of the
    fields it changed, so the calling service saves them inside its own transaction.
    """
    before = {name: getattr(case, name) for name in _SLA_FIELDS}
    calendar = case.queue.calendar
    is_running = case.status in RUNNING_STATUSES
    if case.sla_clock_started_at is not None and not is_running:
        case.sla_minutes_used += business_minutes_between(calendar, case.sla_clock_started_at, now)
        case.sla_clock_started_at = None
    if is_running and case.sla_clock_started_at is None:
        case.sla_clock_started_at = now

    policy = policy_for(case)
    if is_running and policy is not None:
        started, used = case.sla_clock_started_at, case.sla_minutes_used
        if case.first_responded_at is None:
            left = max(0, policy.first_response_minutes - used)
            case.first_response_due_at = add_business_minutes(calendar, started, left)
        left = max(0, policy.resolution_minutes - used)
        case.resolution_due_at = add_business_minutes(calendar, started, left)
    elif case.status == Status.PENDING or policy is None:
        if case.first_responded_at is None or policy is None:
            case.first_response_due_at = None
        case.resolution_due_at = None
    case.sla_due_at = _soonest_running_deadline(case) if is_running else None
    return [name for name in _SLA_FIELDS if getattr(case, name) != before[name]]


_SLA_FIELDS = (
    "first_response_due_at",
    "resolution_due_at",
    "sla_minutes_used",
    "sla_clock_started_at",
    "sla_due_at",
)


def _soonest_running_deadline(case: Case) -> datetime | None:
    deadlines = [case.resolution_due_at]
    if case.first_responded_at is None:
        deadlines.append(case.first_response_due_at)
    deadlines = [due for due in deadlines if due is not None]
    return min(deadlines) if deadlines else None


def _breach_candidates(now: datetime):
    first_response_late = Q(
        first_response_due_at__lte=now,
        first_responded_at__isnull=True,
        first_response_breached_at__isnull=True,
    )
    resolution_late = Q(resolution_due_at__lte=now, resolution_breached_at__isnull=True)
    return Case.objects.filter(
        first_response_late | resolution_late,
        status__in=RUNNING_STATUSES,
        sla_clock_started_at__isnull=False,
    )


def check_sla_breaches(*, now: datetime) -> int:
    """Record each running SLA target that passed its due time; return how many cases changed.

    A breach is stamped once (`*_breached_at` = the due time it missed), put on the customer's
    timeline and published to the case and its queue. Rows are locked with SKIP LOCKED in short
    batches, so two beat runs at once never record the same breach twice.
    """
    changed = 0
    while True:
        with transaction.atomic():
            cases = list(
                _breach_candidates(now)
                .select_related("customer")
                .select_for_update(skip_locked=True, of=("self",))
                .order_by("id")[:BREACH_BATCH]
            )
            for case in cases:
                _record_breaches(case, now=now)
        changed += len(cases)
        if len(cases) < BREACH_BATCH:
            return changed


def _record_breaches(case: Case, *, now: datetime) -> None:
    missed = []
    if (
        case.first_response_due_at is not None
        and case.first_response_due_at <= now
        and case.first_responded_at is None
        and case.first_response_breached_at is None
    ):
        case.first_response_breached_at = case.first_response_due_at
        missed.append(("first_response_breached_at", "first response"))
    if (
        case.resolution_due_at is not None
        and case.resolution_due_at <= now
        and case.resolution_breached_at is None
    ):
        case.resolution_breached_at = case.resolution_due_at
        missed.append(("resolution_breached_at", "resolution"))
    case.save(update_fields=[field for field, _ in missed] + ["updated_at"])
    targets = " and ".join(label for _, label in missed)
    record_interaction(
        customer=live_customer(case.customer),
        channel=Channel.SYSTEM,
        kind=Kind.CASE_EVENT,
        direction=Direction.INTERNAL,
        title=f"Case #{case.pk}: SLA {targets} target missed",
        actor_label="Workbench",
        subject=case,
        status="sla_breached",
        data={"case_id": case.pk, "breached": [field for field, _ in missed]},
    )
    publish_case_changed(case)


def publish_case_changed(case: Case) -> None:
    """Tell the case's page and its queue's list that the case changed (after commit)."""
    realtime.publish_many(case_changed_events(case))


def case_changed_events(case: Case) -> list[tuple[str, str, dict]]:
    """The events `publish_case_changed` sends, for a caller that sends more with them."""
    return [
        (realtime.group_name("case", case.pk), CASE_CHANGED, {"case_id": case.pk}),
        (
            realtime.group_name("queue", case.queue_id),
            QUEUE_CHANGED,
            {"queue_id": case.queue_id, "case_id": case.pk},
        ),
    ]
