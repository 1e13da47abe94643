"""The case queue page: who may open it, tabs and counts, order, filters, pages, live list."""

import re
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from cases.fragments import render_queue_list
from cases.models import PRIORITY_RANK, BusinessCalendar, Case, Queue
from customers.models import Customer

HTMX = {"HTTP_HX_REQUEST": "true"}
URL = "/cases/"


# --- data helpers (also used by the other test modules of this helper) --------------------


def make_queue(name="Support", *, members=(), channels=()):
    calendar, _ = BusinessCalendar.objects.get_or_create(name="Always open")
    queue = Queue.objects.create(name=name, calendar=calendar, default_for_channels=list(channels))
    queue.members.add(*members)
    return queue


def make_customer(name="Ann Lee"):
    return Customer.objects.create(display_name=name)


def make_case(queue, customer=None, *, subject="Router broken", due_in=None, **fields):
    """A case stored directly (the lifecycle has its own tests); due_in: minutes to SLA due."""
    priority = fields.pop("priority", "normal")
    return Case.objects.create(
        queue=queue,
        customer=customer or make_customer(),
        subject=subject,
        channel=fields.pop("channel", "email"),
        priority=priority,
        priority_rank=PRIORITY_RANK[priority],
        sla_due_at=None if due_in is None else timezone.now() + timedelta(minutes=due_in),
        **fields,
    )


def row_ids(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<tr id="case-row-(\d+)"', html)]


def tab_count(html: str, tab: str) -> str:
    return re.search(rf'data-count="{tab}">([^<]*)<', html).group(1)


@pytest.fixture
def support(agent):
    return make_queue("Support", members=[agent], channels=["email"])


@pytest.fixture
def billing(db):
    return make_queue("Billing", channels=["chat"])


# --- who may open it -------------------------------------------------------------------------


def test_marketer_cannot_open_the_queue(client_for, marketer):
    response = client_for(marketer).get(URL)
    assert response.status_code == 403


def test_an_agent_without_cases_sees_the_empty_state(client_for, agent, support):
    html = client_for(agent).get(URL).text
    assert "No cases yet" in html
    assert "Cases open by themselves when a customer writes in" in html
    assert "Take next" in html


def test_agent_may_not_open_the_all_open_tab(client_for, agent, support):
    make_case(support)
    response = client_for(agent).get(URL, {"tab": "all"})
    assert response.status_code == 403
    assert "All open" not in client_for(agent).get(URL).text


def test_agent_sees_their_cases_and_their_queues_unassigned_cases_only(
    client_for, agent, make_user, support, billing
):
    other = make_user("agent")
    mine_elsewhere = make_case(billing, subject="Assigned to me", assignee=agent)
    waiting = make_case(support, subject="Waiting in my queue")
    make_case(billing, subject="Not my queue")
    make_case(support, subject="Taken by a colleague", assignee=other)
    client = client_for(agent)

    mine = client.get(URL, {"tab": "mine"}).text
    queues = client.get(URL, {"tab": "queues"}).text

    assert row_ids(mine) == [mine_elsewhere.pk]
    assert row_ids(queues) == [waiting.pk]
    assert "Not my queue" not in mine + queues
    assert tab_count(mine, "mine") == "1" and tab_count(mine, "queues") == "1"


def test_a_supervisor_of_both_queues_and_the_cco_see_all_open_cases(
    client_for, supervisor, cco, support, billing
):
    support.members.add(supervisor)  # a supervisor's team is their queues
    billing.members.add(supervisor)
    cases = [make_case(support, due_in=10), make_case(billing, due_in=20)]
    make_case(support, status="solved")
    for user in (supervisor, cco):
        html = client_for(user).get(URL, {"tab": "all"}).text
        assert row_ids(html) == [c.pk for c in cases]
        assert tab_count(html, "all") == "2"


def test_cco_lands_on_all_open_and_has_no_take_next(client_for, cco, support):
    case = make_case(support)
    html = client_for(cco).get(URL).text
    assert row_ids(html) == [case.pk]
    assert "Take next" not in html


# --- what a row shows, and the order ---------------------------------------------------------


def test_a_row_shows_subject_link_customer_priority_status_queue_assignee_and_due(
    client_for, make_user, support
):
    viewer = make_user("supervisor", timezone="Asia/Tokyo")
    support.members.add(viewer)  # a supervisor's team is their queues
    case = make_case(support, make_customer("Bo <b>Chen</b>"), priority="high", assignee=viewer)
    case.sla_due_at = timezone.now().replace(hour=3, minute=30, second=0, microsecond=0)
    case.save(update_fields=["sla_due_at"])
    html = client_for(viewer).get(URL, {"tab": "all"}).text
    row = html.split(f'id="case-row-{case.pk}"')[1].split("</tr>")[0]
    assert f'href="/cases/{case.pk}/"' in row
    assert "Bo &lt;b&gt;Chen&lt;/b&gt;" in row
    assert ">High<" in row and ">New<" in row and ">Support<" in row
    assert timezone.localtime(case.sla_due_at, ZoneInfo("Asia/Tokyo")).strftime("%H:%M") == "12:30"
    assert "12:30" in row
    assert "SLA due (Asia/Tokyo)" in html


def test_overdue_cases_say_so(client_for, supervisor, support):
    support.members.add(supervisor)  # a supervisor's team is their queues
    late = make_case(support, due_in=-5)
    make_case(support, due_in=60)
    html = client_for(supervisor).get(URL, {"tab": "all"}).text
    assert html.count("overdue") == 1
    assert "overdue" in html.split(f'id="case-row-{late.pk}"')[1].split("</tr>")[0]


def test_default_order_is_sla_due_with_paused_clocks_last(client_for, supervisor, support):
    support.members.add(supervisor)  # a supervisor's team is their queues
    paused = make_case(support, due_in=None, status="pending")
    later = make_case(support, due_in=90)
    sooner = make_case(support, due_in=5)
    html = client_for(supervisor).get(URL, {"tab": "all"}).text
    assert row_ids(html) == [sooner.pk, later.pk, paused.pk]


def test_sort_by_priority_and_by_age(client_for, supervisor, support):
    support.members.add(supervisor)  # a supervisor's team is their queues
    low = make_case(support, priority="low", due_in=1)
    urgent = make_case(support, priority="urgent", due_in=100)
    normal = make_case(support, priority="normal", due_in=50)
    client = client_for(supervisor)
    assert row_ids(client.get(URL, {"tab": "all", "sort": "priority"}).text) == [
        urgent.pk, normal.pk, low.pk,
    ]  # fmt: skip
    assert row_ids(client.get(URL, {"tab": "all", "sort": "age"}).text) == [
        low.pk, urgent.pk, normal.pk,
    ]  # fmt: skip


def test_filters_by_status_channel_and_queue(client_for, supervisor, support, billing):
    support.members.add(supervisor)  # a supervisor's team is their queues
    billing.members.add(supervisor)
    chat = make_case(billing, channel="chat")
    pending = make_case(support, status="pending")
    new = make_case(support)
    client = client_for(supervisor)
    assert row_ids(client.get(URL, {"tab": "all", "channel": "chat"}).text) == [chat.pk]
    assert row_ids(client.get(URL, {"tab": "all", "status": "pending"}).text) == [pending.pk]
    assert row_ids(client.get(URL, {"tab": "all", "queue": support.pk}).text) == [
        pending.pk,
        new.pk,
    ]


def test_filters_by_topic_whatever_its_case_and_spaces(client_for, supervisor, support):
    support.members.add(supervisor)  # a supervisor's team is their queues
    router = make_case(support, topics=["billing", "router"])
    make_case(support, topics=["billing"])
    make_case(support)
    client = client_for(supervisor)
    html = client.get(URL, {"tab": "all", "topic": "  Router "}).text
    assert row_ids(html) == [router.pk]
    assert 'name="topic" value="  Router "' in html  # the box keeps what was typed
    assert "Clear filters" in html
    assert len(row_ids(client.get(URL, {"tab": "all", "topic": "billing"}).text)) == 2


def test_a_filter_matching_nothing_says_so(client_for, supervisor, support):
    support.members.add(supervisor)  # a supervisor's team is their queues
    make_case(support)
    html = client_for(supervisor).get(URL, {"tab": "all", "channel": "x"}).text
    assert "No cases match these filters." in html


@pytest.mark.parametrize(
    ("query", "field"),
    [({"status": "solved"}, "status"), ({"channel": "pigeon"}, "channel"),
     ({"queue": "abc"}, "queue"), ({"after": "zz"}, "Position"), ({"sort": "mood"}, "sort"),
     ({"topic": "x" * 51}, "topic")],
)  # fmt: skip
def test_invalid_filters_are_a_400_with_the_error_next_to_the_field(
    client_for, supervisor, support, query, field
):
    support.members.add(supervisor)  # a supervisor's team is their queues
    response = client_for(supervisor).get(URL, query)
    assert response.status_code == 400
    assert 'class="field-error"' in response.text
    assert "Fix the filters above" in response.text


# --- keyset pages ----------------------------------------------------------------------------


def test_pages_of_25_continue_by_keyset_without_repeats(client_for, supervisor, support):
    support.members.add(supervisor)  # a supervisor's team is their queues
    # 30 with a due time (two sharing one) and 10 paused: the page break crosses NULLs too.
    due = [make_case(support, due_in=n if n != 3 else 2) for n in range(30)]
    paused = [make_case(support, status="pending") for _ in range(10)]
    client = client_for(supervisor)
    seen = []
    url, query = URL, {"tab": "all"}
    while True:
        html = client.get(url, query).text
        seen += row_ids(html)
        found = re.search(r'href="([^"]+)" rel="next"', html)
        if not found:
            break
        url, query = found.group(1).replace("&amp;", "&"), None
        assert "OFFSET" not in url
    assert len(seen) == 40 and len(set(seen)) == 40
    assert seen[:30] == [c.pk for c in sorted(due, key=lambda c: (c.sla_due_at, c.pk))]
    assert seen[30:] == [c.pk for c in paused]


def test_tab_counts_are_capped_not_counted_to_the_end(client_for, supervisor, support, monkeypatch):
    support.members.add(supervisor)  # a supervisor's team is their queues
    monkeypatch.setattr("cases.views.COUNT_CAP", 3)
    for _ in range(5):
        make_case(support)
    html = client_for(supervisor).get(URL, {"tab": "all"}).text
    assert tab_count(html, "all") == "3+"


def test_query_count_does_not_grow_with_the_queue(client_for, supervisor, support, billing):
    support.members.add(supervisor)  # a supervisor's team is their queues
    billing.members.add(supervisor)
    client = client_for(supervisor)
    for _ in range(3):
        make_case(support, assignee=supervisor)
    client.get(URL, {"tab": "all"})
    with CaptureQueriesContext(connection) as few:
        client.get(URL, {"tab": "all"})
    for n in range(40):
        make_case(billing if n % 2 else support, due_in=n)
    with CaptureQueriesContext(connection) as many:
        client.get(URL, {"tab": "all"})
    assert len(many.captured_queries) == len(few.captured_queries)
    assert not any("DISTINCT" in q["sql"] or "OFFSET" in q["sql"] for q in many.captured_queries)


# --- live --------------------------------------------------------------------------------------


def test_page_subscribes_to_the_groups_of_the_viewers_queues(client_for, agent, support, billing):
    html = client_for(agent).get(URL).text
    assert f"group=queue.{support.pk}" in html
    assert f"group=queue.{billing.pk}" not in html


def test_supervisor_page_subscribes_to_the_queues_of_their_team(
    client_for, supervisor, cco, support, billing
):
    support.members.add(supervisor)  # a supervisor's team is their queues
    html = client_for(supervisor).get(URL).text
    assert f"group=queue.{support.pk}" in html and f"group=queue.{billing.pk}" not in html
    every = client_for(cco).get(URL).text
    assert f"group=queue.{support.pk}" in every and f"group=queue.{billing.pk}" in every


def test_htmx_request_returns_the_list_alone(client_for, agent, support):
    case = make_case(support)
    response = client_for(agent).get(URL, {"tab": "queues"}, **HTMX)
    assert response.text.lstrip().startswith('<section id="queue-list"')
    assert row_ids(response.text) == [case.pk]
    assert "wb:resync from:body" in response.text


def test_pushed_list_is_the_default_view_marked_to_swap_only_the_default_view(
    client_for, agent, support
):
    case = make_case(support, assignee=agent)
    http = client_for(agent).get(URL, **HTMX).text.strip()
    pushed = render_queue_list(agent, queue_id=support.pk, case_id=case.pk).strip()
    assert 'hx-swap-oob="outerHTML:#queue-list.queue-default"' in pushed
    assert pushed.replace(' hx-swap-oob="outerHTML:#queue-list.queue-default"', "") == http
    assert row_ids(pushed) == [case.pk]


def test_a_filtered_view_refetches_itself_when_a_push_finds_no_default_view(
    client_for, agent, support
):
    html = client_for(agent).get(URL, {"tab": "queues", "channel": "email"}).text
    section = html.split('<section id="queue-list"')[1].split(">")[0]
    assert 'class=""' in section
    assert "htmx:oobErrorNoTarget from:body" in section
    assert 'hx-get="/cases/?tab=queues&amp;channel=email"' in section


def test_pushed_list_for_a_marketer_is_empty(marketer):
    assert render_queue_list(marketer, queue_id=1, case_id=1) == ""
