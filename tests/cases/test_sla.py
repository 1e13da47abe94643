"""The SLA clock: business-minute arithmetic (table-driven), due times, pauses and breaches."""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from cases.models import BusinessCalendar, Case, Status
from cases.sla import add_business_minutes, apply_sla, business_minutes_between, check_sla_breaches
from cases.tasks import check_sla_breaches_task
from customers.models import Interaction, Kind
from tests.cases.factories import (
    OFFICE_HOURS,
    CaseFactory,
    QueueFactory,
    SlaPolicyFactory,
    ensure_case_events_render,
)
from workbench import realtime

LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")


def london(year, month, day, hour=0, minute=0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=LONDON)


def utc(year, month, day, hour=0, minute=0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def calendar(working_hours=None, *, zone="Europe/London", holidays=()) -> BusinessCalendar:
    hours = OFFICE_HOURS if working_hours is None else working_hours
    return BusinessCalendar(
        name="test", timezone=zone, working_hours=hours, holidays=list(holidays)
    )


OFFICE = calendar()
CHRISTMAS = calendar(holidays=[date(2025, 12, 25), date(2025, 12, 26)])
EVERY_DAY = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
NIGHT_SHIFT = calendar({day: [["22:00", "06:00"]] for day in EVERY_DAY}, zone="UTC")
SPLIT_SHIFT = calendar({"mon": [["09:00", "12:00"], ["13:00", "17:00"]]})
ALWAYS_OPEN = calendar({}, zone="UTC")
SUNDAY_SMALL_HOURS = calendar({"sun": [["00:00", "04:00"]]})
WEEKEND_ALL_DAY = calendar({"sat": [["00:00", "24:00"]]}, zone="UTC")
NEW_YORK_OFFICE = calendar(zone="America/New_York")

# 6 January 2025 is a Monday; London is on GMT (= UTC) in January.
ADD_CASES = [
    ("within the working day", OFFICE, london(2025, 1, 6, 10), 60, london(2025, 1, 6, 11)),
    ("ends exactly at closing", OFFICE, london(2025, 1, 6, 16), 60, london(2025, 1, 6, 17)),
    ("runs over night", OFFICE, london(2025, 1, 6, 16, 30), 60, london(2025, 1, 7, 9, 30)),
    ("starts before opening", OFFICE, london(2025, 1, 6, 7), 30, london(2025, 1, 6, 9, 30)),
    ("starts after closing", OFFICE, london(2025, 1, 6, 18), 30, london(2025, 1, 7, 9, 30)),
    ("runs over the weekend", OFFICE, london(2025, 1, 10, 16), 120, london(2025, 1, 13, 10)),
    ("starts on a Saturday", OFFICE, london(2025, 1, 11, 12), 10, london(2025, 1, 13, 9, 10)),
    ("two working days", OFFICE, london(2025, 1, 6, 9), 960, london(2025, 1, 7, 17)),
    ("a full week and a bit", OFFICE, london(2025, 1, 6, 9), 2401, london(2025, 1, 13, 9, 1)),
    ("zero minutes at night", OFFICE, london(2025, 1, 6, 22), 0, london(2025, 1, 6, 22)),
    (
        "skips two holidays and a weekend",
        CHRISTMAS,
        london(2025, 12, 24, 16),
        120,
        london(2025, 12, 29, 10),
    ),
    ("a holiday-free calendar", OFFICE, london(2025, 12, 24, 16), 120, london(2025, 12, 25, 10)),
    (
        "over the spring clock change (GMT to BST)",
        OFFICE,
        london(2025, 3, 28, 16),
        120,
        utc(2025, 3, 31, 9),  # 10:00 BST
    ),
    (
        "over the autumn clock change (BST to GMT)",
        OFFICE,
        london(2025, 10, 24, 16),  # 15:00 UTC
        120,
        utc(2025, 10, 27, 10),  # 10:00 GMT
    ),
    (
        "a start given in UTC counts in the calendar's zone",
        OFFICE,
        utc(2025, 6, 2, 7, 30),  # 08:30 BST, before opening
        30,
        utc(2025, 6, 2, 8, 30),  # 09:30 BST
    ),
    ("New York hours", NEW_YORK_OFFICE, utc(2025, 1, 6, 13), 60, utc(2025, 1, 6, 15)),
    ("a night shift, from before it", NIGHT_SHIFT, utc(2025, 1, 6, 5), 120, utc(2025, 1, 6, 23)),
    ("a night shift, already running", NIGHT_SHIFT, utc(2025, 1, 7, 1), 30, utc(2025, 1, 7, 1, 30)),
    ("a lunch break", SPLIT_SHIFT, london(2025, 1, 6, 11, 30), 60, london(2025, 1, 6, 13, 30)),
    ("a day open until midnight", WEEKEND_ALL_DAY, utc(2025, 1, 10, 12), 1440, utc(2025, 1, 12)),
    (
        "no hours at all: every minute",
        ALWAYS_OPEN,
        utc(2025, 1, 11, 23),
        90,
        utc(2025, 1, 12, 0, 30),
    ),
]


@pytest.mark.parametrize(
    ("calendar", "start", "minutes", "expected"),
    [case[1:] for case in ADD_CASES],
    ids=[case[0] for case in ADD_CASES],
)
def test_add_business_minutes(calendar, start, minutes, expected):
    assert add_business_minutes(calendar, start, minutes) == expected


BETWEEN_CASES = [
    ("within a window", OFFICE, london(2025, 1, 6, 10), london(2025, 1, 6, 11, 30), 90),
    ("over night", OFFICE, london(2025, 1, 6, 16), london(2025, 1, 7, 10), 120),
    ("over a weekend", OFFICE, london(2025, 1, 10, 16), london(2025, 1, 13, 10), 120),
    ("a whole week", OFFICE, london(2025, 1, 6), london(2025, 1, 13), 5 * 480),
    ("a Christmas week", CHRISTMAS, london(2025, 12, 22), london(2025, 12, 29), 3 * 480),
    ("entirely at night", OFFICE, london(2025, 1, 6, 18), london(2025, 1, 7, 8), 0),
    ("end before start", OFFICE, london(2025, 1, 7, 10), london(2025, 1, 6, 10), 0),
    (
        "partial minutes round down",
        OFFICE,
        london(2025, 1, 6, 10),
        london(2025, 1, 6, 10) + timedelta(seconds=119),
        1,
    ),
    # 01:00 GMT becomes 02:00 BST: the local 00:00-04:00 window is three real hours long...
    (
        "the short night of spring",
        SUNDAY_SMALL_HOURS,
        london(2025, 3, 30),
        london(2025, 3, 30, 4),
        180,
    ),
    # ...and in autumn 01:00-02:00 happens twice, so it is five.
    (
        "the long night of autumn",
        SUNDAY_SMALL_HOURS,
        london(2025, 10, 26),
        london(2025, 10, 26, 4),
        300,
    ),
    ("a night shift over midnight", NIGHT_SHIFT, utc(2025, 1, 6, 21), utc(2025, 1, 7, 7), 480),
    (
        "a lunch break does not count",
        SPLIT_SHIFT,
        london(2025, 1, 6, 11),
        london(2025, 1, 6, 14),
        120,
    ),
]


@pytest.mark.parametrize(
    ("calendar", "start", "end", "expected"),
    [case[1:] for case in BETWEEN_CASES],
    ids=[case[0] for case in BETWEEN_CASES],
)
def test_business_minutes_between(calendar, start, end, expected):
    assert business_minutes_between(calendar, start, end) == expected


@pytest.mark.parametrize("minutes", [1, 59, 420, 481, 2400, 10_000])
@pytest.mark.parametrize("start", [london(2025, 3, 28, 16, 17), london(2025, 12, 24, 3)])
def test_minutes_added_are_the_minutes_between(start, minutes):
    due = add_business_minutes(CHRISTMAS, start, minutes)

    assert business_minutes_between(CHRISTMAS, start, due) == minutes


def test_a_calendar_that_never_opens_is_refused_not_searched_forever():
    every_monday = [london(2025, 1, 6) + timedelta(weeks=n) for n in range(200)]
    holiday_mondays = calendar(
        {"mon": [["09:00", "17:00"]]}, holidays=[d.date() for d in every_monday]
    )

    with pytest.raises(ValueError, match="no working time"):
        add_business_minutes(holiday_mondays, london(2025, 1, 6), 60)
    with pytest.raises(ValueError, match="negative"):
        add_business_minutes(OFFICE, london(2025, 1, 6), -1)


# --- The clock on a case -------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _case_events_render():
    ensure_case_events_render()


@pytest.fixture
def queue(db):
    queue = QueueFactory()
    SlaPolicyFactory(
        queue=queue, priority="normal", first_response_minutes=240, resolution_minutes=960
    )
    SlaPolicyFactory(
        queue=queue, priority="urgent", first_response_minutes=30, resolution_minutes=240
    )
    return queue


def new_case(queue, *, at: datetime, priority="normal") -> Case:
    case = CaseFactory(queue=queue, priority=priority)
    apply_sla(case, now=at)
    case.save()
    return case


def move(case: Case, status: str, *, at: datetime) -> list[str]:
    case.status = status
    changed = apply_sla(case, now=at)
    case.save()
    return changed


def test_a_new_case_gets_both_due_times_and_sorts_by_the_sooner(queue):
    case = new_case(queue, at=london(2025, 1, 6, 10))

    assert case.first_response_due_at == london(2025, 1, 6, 14)
    assert case.resolution_due_at == london(2025, 1, 8, 10)
    assert case.sla_due_at == london(2025, 1, 6, 14)
    assert case.sla_clock_started_at == london(2025, 1, 6, 10)
    assert case.sla_minutes_used == 0


def test_an_urgent_case_follows_the_urgent_policy(queue):
    case = new_case(queue, at=london(2025, 1, 10, 16, 45), priority="urgent")

    assert case.first_response_due_at == london(2025, 1, 13, 9, 15)
    assert case.resolution_due_at == london(2025, 1, 13, 12, 45)


def test_once_answered_only_the_resolution_target_is_running(queue):
    case = new_case(queue, at=london(2025, 1, 6, 10))
    case.first_responded_at = london(2025, 1, 6, 11)

    changed = apply_sla(case, now=london(2025, 1, 6, 11))

    assert changed == ["sla_due_at"]
    assert case.sla_due_at == case.resolution_due_at == london(2025, 1, 8, 10)
    assert case.first_response_due_at == london(2025, 1, 6, 14)


def test_pending_banks_the_business_minutes_used_and_clears_the_deadlines(queue):
    case = new_case(queue, at=london(2025, 1, 6, 10))

    changed = move(case, Status.PENDING, at=london(2025, 1, 6, 20))  # after closing

    assert sorted(changed) == sorted(
        [
            "first_response_due_at",
            "resolution_due_at",
            "sla_minutes_used",
            "sla_clock_started_at",
            "sla_due_at",
        ]
    )
    assert case.sla_minutes_used == 420  # 10:00 to 17:00, not to 20:00
    assert (case.sla_clock_started_at, case.sla_due_at) == (None, None)
    assert (case.first_response_due_at, case.resolution_due_at) == (None, None)


def test_resuming_counts_down_only_what_was_left(queue):
    case = new_case(queue, at=london(2025, 1, 6, 10))
    move(case, Status.PENDING, at=london(2025, 1, 6, 12))  # 120 minutes used

    move(case, Status.OPEN, at=london(2025, 1, 8, 9))  # two days later

    assert case.sla_minutes_used == 120
    assert case.sla_clock_started_at == london(2025, 1, 8, 9)
    assert case.first_response_due_at == london(2025, 1, 8, 11)  # 240 - 120 left
    assert case.resolution_due_at == london(2025, 1, 9, 15)  # 960 - 120 = 840 left
    assert case.sla_due_at == london(2025, 1, 8, 11)


def test_pauses_and_resumes_add_up(queue):
    case = new_case(queue, at=london(2025, 1, 6, 9))
    for pause_at, resume_at in [
        (london(2025, 1, 6, 10), london(2025, 1, 7, 9)),  # 60 used
        (london(2025, 1, 7, 10, 30), london(2025, 1, 9, 16)),  # 90 used
    ]:
        move(case, Status.PENDING, at=pause_at)
        move(case, Status.OPEN, at=resume_at)

    assert case.sla_minutes_used == 150
    assert case.first_response_due_at == london(2025, 1, 10, 9, 30)  # 90 left from Thu 16:00


def test_a_target_already_spent_is_due_at_once_when_the_clock_resumes(queue):
    case = new_case(queue, at=london(2025, 1, 6, 9))
    move(case, Status.PENDING, at=london(2025, 1, 6, 15))  # 360 used > 240 first response

    move(case, Status.OPEN, at=london(2025, 1, 7, 9))

    assert case.first_response_due_at == london(2025, 1, 7, 9)


def test_solving_stops_the_clock_and_keeps_the_targets_on_record(queue):
    case = new_case(queue, at=london(2025, 1, 6, 10))

    move(case, Status.SOLVED, at=london(2025, 1, 6, 16))

    assert case.sla_minutes_used == 360
    assert (case.sla_clock_started_at, case.sla_due_at) == (None, None)
    assert case.resolution_due_at == london(2025, 1, 8, 10)


def test_applying_twice_changes_nothing_more(queue):
    case = new_case(queue, at=london(2025, 1, 6, 10))

    assert apply_sla(case, now=london(2025, 1, 6, 11)) == []


def test_a_queue_without_a_policy_for_the_priority_sets_no_deadline(queue):
    case = new_case(queue, at=london(2025, 1, 6, 10), priority="low")

    assert (case.first_response_due_at, case.resolution_due_at, case.sla_due_at) == (
        None,
        None,
        None,
    )
    assert case.sla_clock_started_at == london(2025, 1, 6, 10)


# --- Breaches ------------------------------------------------------------------------------


def seq(kind: str, pk: int) -> int:
    return realtime.current_seq(realtime.group_name(kind, pk))


def breach_entries(case) -> list[str]:
    return list(
        Interaction.objects.filter(
            kind=Kind.CASE_EVENT, subject_id=case.pk, status="sla_breached"
        ).values_list("title", flat=True)
    )


def test_a_missed_first_response_is_recorded_once_put_on_the_timeline_and_published(
    queue, django_capture_on_commit_callbacks
):
    case = new_case(queue, at=london(2025, 1, 6, 10))
    case_seq, queue_seq = seq("case", case.pk), seq("queue", queue.pk)

    with django_capture_on_commit_callbacks(execute=True):
        first_run = check_sla_breaches(now=london(2025, 1, 6, 14, 1))
    with django_capture_on_commit_callbacks(execute=True):
        second_run = check_sla_breaches(now=london(2025, 1, 6, 15))

    case.refresh_from_db()
    assert (first_run, second_run) == (1, 0)
    assert case.first_response_breached_at == london(2025, 1, 6, 14)
    assert case.resolution_breached_at is None
    assert breach_entries(case) == [f"Case #{case.pk}: SLA first response target missed"]
    assert seq("case", case.pk) - case_seq == 1
    assert seq("queue", queue.pk) - queue_seq == 1


def test_both_targets_missed_are_recorded_in_one_entry(queue):
    case = new_case(queue, at=london(2025, 1, 6, 10))

    assert check_sla_breaches(now=london(2025, 1, 9)) == 1

    case.refresh_from_db()
    assert case.first_response_breached_at == london(2025, 1, 6, 14)
    assert case.resolution_breached_at == london(2025, 1, 8, 10)
    assert breach_entries(case) == [
        f"Case #{case.pk}: SLA first response and resolution target missed"
    ]


def test_nothing_is_breached_before_the_due_time(queue):
    case = new_case(queue, at=london(2025, 1, 6, 10))

    assert check_sla_breaches(now=london(2025, 1, 6, 13, 59)) == 0
    case.refresh_from_db()
    assert case.first_response_breached_at is None
    assert breach_entries(case) == []


def test_paused_solved_and_answered_cases_are_not_breached(queue):
    pending = new_case(queue, at=london(2025, 1, 6, 10))
    move(pending, Status.PENDING, at=london(2025, 1, 6, 11))
    solved = new_case(queue, at=london(2025, 1, 6, 10))
    move(solved, Status.SOLVED, at=london(2025, 1, 6, 11))
    answered = new_case(queue, at=london(2025, 1, 6, 10))
    answered.first_responded_at = london(2025, 1, 6, 11)
    apply_sla(answered, now=london(2025, 1, 6, 11))
    answered.save()

    assert check_sla_breaches(now=london(2025, 1, 7, 12)) == 0
    assert Case.objects.filter(first_response_breached_at__isnull=False).count() == 0


def test_the_beat_task_checks_breaches_at_the_current_time(queue):
    case = new_case(queue, at=timezone.now() - timedelta(days=10))

    assert check_sla_breaches_task() == 1
    assert check_sla_breaches_task() == 0
    case.refresh_from_db()
    assert case.resolution_breached_at is not None
