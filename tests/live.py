"""Waiting for the hub: a socket joins its groups just after it is accepted, so a test that
publishes at once must wait until Redis has the subscription (delivery is at-most-once)."""

from __future__ import annotations

import asyncio
import time

from django.conf import settings

from workbench import realtime


def is_subscribed(group: str) -> bool:
    """Whether a socket listens on the group: the pub/sub layer names its Redis channel
    `<prefix>__group__<group>` (channels_redis.pubsub)."""
    prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
    channel = f"{prefix}__group__{realtime.layer_group(group)}"
    return realtime._redis().pubsub_numsub(channel)[0][1] > 0


def wait_until_subscribed(group: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not is_subscribed(group):
        assert time.monotonic() < deadline, f"nobody subscribed to {group} within {timeout}s"
        time.sleep(0.02)


async def until_subscribed(group: str, timeout: float = 10) -> None:
    await asyncio.to_thread(wait_until_subscribed, group, timeout)
