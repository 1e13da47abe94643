"""Shared fixtures: users by role, clients signed in as them, and per-worker Redis isolation."""

import os

import pytest

from tests.factories import UserFactory


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Each xdist worker gets its own Redis key prefix (channel layer, sequence numbers, cache,
    presence), so parallel tests never hear or delete each other's keys. xdist names the worker
    only in `config.workerinput`, after this module is imported, and Django may have read its
    settings by then: set the environment (for child processes) and the settings alike."""
    from django.conf import settings

    worker = getattr(config, "workerinput", {}).get("workerid", "main")
    prefix = f"{os.environ.get('WORKBENCH_REDIS_PREFIX', 'wbtest')}-{worker}"
    os.environ["WORKBENCH_REDIS_PREFIX"] = prefix
    if settings.configured:
        settings.REDIS_PREFIX = prefix
        settings.CACHES["default"]["KEY_PREFIX"] = f"{prefix}:cache"
        settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = f"{prefix}:asgi"


ROLES = ("agent", "supervisor", "marketer", "cco")


@pytest.fixture
def make_user(db):
    """make_user("agent") → a saved user holding that role (None: no role at all)."""

    def make(role: str | None = None, **fields):
        return UserFactory(role=role, **fields)

    return make


@pytest.fixture
def agent(make_user):
    return make_user("agent", username="ada")


@pytest.fixture
def supervisor(make_user):
    return make_user("supervisor", username="sam")


@pytest.fixture
def marketer(make_user):
    return make_user("marketer", username="mia")


@pytest.fixture
def cco(make_user):
    return make_user("cco", username="cleo")


@pytest.fixture
def no_role_user(make_user):
    return make_user(None, username="newbie")


@pytest.fixture
def client_for(client):
    """client_for(user) → Django's test client signed in as that user."""

    def sign_in(user):
        client.force_login(user)
        return client

    return sign_in
