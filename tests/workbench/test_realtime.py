"""The realtime hub: who may join which group, bad frames, publish after commit, same fragment."""

import asyncio

import msgpack
import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import transaction

from tests.cases.test_queue_page import make_case, make_queue
from tests.live import until_subscribed
from workbench import realtime
from workbench.audit import record_audit
from workbench.consumers import HubConsumer

pytestmark = pytest.mark.django_db(transaction=True)


async def connect(user, query: str = ""):
    communicator = WebsocketCommunicator(HubConsumer.as_asgi(), f"/ws/hub/?{query}")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def closed_with(communicator) -> int | None:
    """The close code the hub sent, or None if the socket stayed open."""
    if await communicator.receive_nothing(timeout=0.5):
        await communicator.disconnect()
        return None
    output = await communicator.receive_output(timeout=1)
    assert output["type"] == "websocket.close", output
    return output["code"]


@pytest.mark.parametrize(
    ("role", "group", "code"),
    [
        ("cco", "console", None),
        ("agent", "console", 4403),
        ("marketer", "console", 4403),
        ("supervisor", "console", 4403),
        ("agent", "campaign.3", 4403),
        ("marketer", "campaign.3", None),
        ("marketer", "case.7", 4403),
        ("marketer", "customer.5", None),
        ("cco", "case.7", None),
        (None, "customer.5", 4403),
        ("cco", "case", 4403),  # a kind that needs an id, without one
        ("cco", "console.1", 4403),  # a singleton, with one
        ("cco", "nonsense.1", 4403),
        ("cco", "case.-1", 4403),
    ],
)
def test_hub_joins_only_groups_the_role_may_read(make_user, role, group, code):
    user = make_user(role)

    async def scenario():
        return await closed_with(await connect(user, f"group={group}"))

    assert async_to_sync(scenario)() == code


def test_an_agent_joins_the_case_and_queue_groups_of_their_queues_only(make_user):
    agent = make_user("agent")
    support, billing = make_queue("Support", members=[agent]), make_queue("Billing")
    own, other = make_case(support), make_case(billing)
    assigned = make_case(billing, subject="Theirs, in another queue")
    assigned.assignee = agent
    assigned.save(update_fields=["assignee"])

    async def scenario(group):
        return await closed_with(await connect(agent, f"group={group}"))

    def code(group):
        return async_to_sync(scenario)(group)

    assert code(f"case.{own.pk}") is None
    assert code(f"queue.{support.pk}") is None
    assert code(f"case.{assigned.pk}") is None
    assert code(f"case.{other.pk}") == 4403
    assert code(f"queue.{billing.pk}") == 4403
    assert code("case.999999") == 4403  # no such case


def test_hub_closes_a_signed_out_socket_with_4401(db):
    from django.contrib.auth.models import AnonymousUser

    async def scenario():
        return await closed_with(await connect(AnonymousUser(), "group=console"))

    assert async_to_sync(scenario)() == 4401


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"bytes": b"\x00\x01"}, 1003),
        ({"text": "not json"}, 1007),
        ({"text": "[1, 2]"}, 1007),
        ({"text": '{"pad": "' + "x" * 5000 + '"}'}, 1009),
        ({"text": '{"subscribe": "console"}'}, 4403),
        ({"text": '{"subscribe": "case.9"}'}, None),
        ({"text": '{"hello": "there"}'}, None),
    ],
)
def test_a_bad_frame_closes_only_that_socket(make_user, frame, code):
    agent = make_user("agent")
    support = make_queue("Support", members=[agent])
    case = make_case(support)
    group = f"group=queue.{support.pk}"
    if "text" in frame:
        frame = {"text": frame["text"].replace("case.9", f"case.{case.pk}")}

    async def scenario():
        bad = await connect(agent, group)
        good = await connect(agent, group)
        await bad.send_input({"type": "websocket.receive", **frame})
        bad_code = await closed_with(bad)
        still_open = await closed_with(good)
        return bad_code, still_open

    assert async_to_sync(scenario)() == (code, None)


async def listen_while(group: str, action, timeout: float = 0.5) -> list[dict]:
    """Join `group` as a raw channel-layer receiver, run the sync `action`, return what arrived."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(realtime.layer_group(group), channel)
    await asyncio.to_thread(action)
    messages = []
    while True:
        try:
            messages.append(await asyncio.wait_for(layer.receive(channel), timeout))
        except TimeoutError:
            await layer.group_discard(realtime.layer_group(group), channel)
            return messages


def test_publish_sends_nothing_when_the_transaction_rolls_back(db):
    before = realtime.current_seq("console")

    def failing_service():
        with pytest.raises(RuntimeError), transaction.atomic():
            realtime.publish("console", "console.sign_ins")
            raise RuntimeError("the service failed")

    assert async_to_sync(listen_while)("console", failing_service) == []
    assert realtime.current_seq("console") == before


def test_publish_sends_once_after_commit_with_the_next_sequence_number(db):
    before = realtime.current_seq("console")
    seen_before_commit = []

    def service():
        with transaction.atomic():
            realtime.publish("console", "console.sign_ins")
            seen_before_commit.append(realtime.current_seq("console"))

    [message] = async_to_sync(listen_while)("console", service)
    assert seen_before_commit == [before]  # not numbered, so not sent, before the commit
    assert message["type"] == "wb.event"
    assert (message["group"], message["seq"], message["event"]) == (
        "console",
        before + 1,
        "console.sign_ins",
    )
    assert message["data"] == {}


def test_publish_many_sends_each_after_commit_in_order_with_consecutive_numbers(db):
    before = realtime.current_seq("console")

    def service():
        with transaction.atomic():
            realtime.publish_many([("console", "console.sign_ins", {"n": n}) for n in range(3)])
        with pytest.raises(RuntimeError), transaction.atomic():
            realtime.publish_many([("console", "console.sign_ins", {"n": 99})])
            raise RuntimeError("rolled back: never sent")

    messages = async_to_sync(listen_while)("console", service)
    assert [(m["seq"], m["data"]) for m in messages] == [
        (before + 1, {"n": 0}),
        (before + 2, {"n": 1}),
        (before + 3, {"n": 2}),
    ]
    assert realtime.current_seq("console") == before + 3


def test_a_rolled_back_savepoint_drops_its_events_and_keeps_the_rest_in_order(db):
    before = realtime.current_seq("console")

    def service():
        with transaction.atomic():
            realtime.publish("console", "console.sign_ins", n=1)
            with pytest.raises(RuntimeError), transaction.atomic():
                realtime.publish("console", "console.sign_ins", n=2)
                raise RuntimeError("the inner step failed")
            realtime.publish("console", "console.sign_ins", n=3)
            with transaction.atomic():
                realtime.publish("console", "console.sign_ins", n=4)
            realtime.publish("console", "console.sign_ins", n=5)

    messages = async_to_sync(listen_while)("console", service)
    assert [(m["seq"], m["data"]["n"]) for m in messages] == [
        (before + 1, 1), (before + 2, 3), (before + 3, 4), (before + 4, 5),
    ]  # fmt: skip


def test_the_events_of_one_transaction_go_out_together(db, monkeypatch):
    batches = []
    monkeypatch.setattr(realtime, "send_many", lambda events: batches.append(list(events)))
    with transaction.atomic():
        realtime.publish("console", "console.sign_ins", n=1)
        realtime.publish_many([("console", "console.sign_ins", {"n": 2}),
                               ("console", "console.sign_ins", {"n": 3})])  # fmt: skip
        assert batches == []
    assert [[data["n"] for _, _, data in batch] for batch in batches] == [[1, 2, 3]]


def test_a_batch_is_numbered_and_published_by_one_script_call_without_a_pipeline(db, monkeypatch):
    before = realtime.current_seq("console")
    calls = []
    script = realtime._number_and_publish()
    monkeypatch.setattr(realtime, "_number_and_publish", lambda: lambda **kw: calls.append(kw)
                        or script(**kw))  # fmt: skip

    def no_pipeline(*args, **kwargs):
        raise AssertionError("a pipeline means a second round trip")

    monkeypatch.setattr(realtime._redis(), "pipeline", no_pipeline)
    seqs = realtime.send_many([("console", "console.sign_ins", {"n": n}) for n in range(3)])

    assert seqs == [before + 1, before + 2, before + 3]
    assert len(calls) == 1 and len(calls[0]["keys"]) == 3
    assert realtime.current_seq("console") == before + 3


def test_a_layer_that_prefixes_or_encrypts_its_bytes_is_not_numbered_in_redis():
    assert realtime._is_plain_msgpack(get_channel_layer())

    class PrefixingLayer:
        def serialize(self, message):
            return b"\x00" * 12 + get_channel_layer().serialize(message)

    assert not realtime._is_plain_msgpack(PrefixingLayer())


def test_a_message_numbered_in_redis_reads_back_as_the_layer_wrote_it():
    layer = get_channel_layer()
    unnumbered = realtime._unnumbered(layer, "case.7", "case.changed", {"case_id": 7})
    for seq in (1, 127, 128, 65_536, 2**40):
        message = layer.deserialize(unnumbered + msgpack.packb(seq))
        assert message["seq"] == seq
        assert (message["type"], message["group"], message["event"], message["data"]) == (
            "wb.event", "case.7", "case.changed", {"case_id": 7},
        )  # fmt: skip


def test_publish_many_refuses_the_whole_batch_when_one_event_is_bad(db):
    before = realtime.current_seq("console")
    with pytest.raises(ValueError, match="not a registered realtime group"):
        realtime.publish_many([("console", "console.sign_ins", {}), ("nonsense.1", "x", {})])
    assert realtime.current_seq("console") == before


def test_publish_refuses_unknown_groups_events_and_non_scalar_data(db):
    with pytest.raises(ValueError, match="not a registered realtime group"):
        realtime.publish("nonsense.1", "console.sign_ins")
    with pytest.raises(LookupError, match="no fragment"):
        realtime.publish("console", "no.such.event")
    with pytest.raises(TypeError, match="scalars"):
        realtime.publish("console", "console.sign_ins", rows=[1, 2])


def test_pushed_fragment_equals_the_http_fragment(client_for, cco, make_user):
    ben = make_user("agent", username="ben")
    record_audit(actor=ben, action="sign_in", target=ben)
    http_fragment = client_for(cco).get("/console/", HTTP_HX_REQUEST="true").text

    async def scenario():
        socket = await connect(cco, "group=console")
        await until_subscribed("console")
        seq = await asyncio.to_thread(realtime.send_now, "console", "console.sign_ins", {})
        text = await socket.receive_from(timeout=2)
        await socket.disconnect()
        return seq, text

    seq, pushed = async_to_sync(scenario)()
    assert pushed == f"<!--wb:console:{seq}-->{http_fragment}"
    assert 'id="sign-ins"' in http_fragment
    assert "ben" in http_fragment


def test_console_page_embeds_the_socket_with_the_current_sequence(client_for, cco):
    client = client_for(cco)  # signing in publishes to the console too
    realtime.send_now("console", "console.sign_ins", {})
    seq = realtime.current_seq("console")
    page = client.get("/console/").text
    # The console's group, and the CCO's own (their notifications badge), from its current seq.
    assert f'ws-connect="/ws/hub/?group=console&amp;group=user.{cco.pk}"' in page
    assert f'data-wb-seq="{{&quot;console&quot;: {seq}, &quot;user.{cco.pk}&quot;: 0}}"' in page


def test_send_now_delivers_from_a_thread_that_runs_an_event_loop(db):
    """A sync publisher inside a running loop (Playwright's, an async test's) is served by the
    process's publisher loop; async_to_sync used to refuse there."""

    async def scenario():
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(realtime.layer_group("console"), channel)
        await until_subscribed("console")
        seqs = [realtime.send_now("console", "console.sign_ins", {}) for _ in range(3)]
        received = [(await asyncio.wait_for(layer.receive(channel), 5))["seq"] for _ in seqs]
        await layer.group_discard(realtime.layer_group("console"), channel)
        return seqs, received

    seqs, received = async_to_sync(scenario)()
    assert received == seqs
    assert seqs == list(range(seqs[0], seqs[0] + 3))
