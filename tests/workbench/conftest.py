"""Fixtures the chat tests share: Ada, her chat queue, and chat/presence keys cleared."""

import pytest

from tests.cases.factories import CalendarFactory, QueueFactory, SlaPolicyFactory
from workbench.connectors import chat


@pytest.fixture
def clean_chat(settings):
    """Mail to the local outbox, and no chat or presence keys left from an earlier test."""
    settings.EMAIL_BACKEND = "workbench.mail.OutboxBackend"
    client = chat._redis()
    for key in client.scan_iter(f"{settings.REDIS_PREFIX}:chat:*"):
        client.delete(key)
    for key in client.scan_iter(f"{settings.REDIS_PREFIX}:presence:*"):
        client.delete(key)


@pytest.fixture
def ada(make_user):
    return make_user("agent", username="ada", first_name="Ada", last_name="Lovelace")


@pytest.fixture
def support(ada):
    """The chat queue (always open: no working hours), with Ada in it."""
    queue = QueueFactory(
        name="Chat", default_for_channels=["chat"], calendar=CalendarFactory(working_hours={})
    )
    queue.members.add(ada)
    SlaPolicyFactory(queue=queue, priority="normal")
    return queue
