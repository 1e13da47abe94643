"""The realtime hub: one websocket per page; it joins the groups the user's role may read.

The page names its groups in the URL (`/ws/hub/?group=case.12&group=queue.3`) and may add or drop
groups with JSON frames `{"subscribe": "case.13"}` / `{"unsubscribe": "case.12"}`. Each event is
sent as `<!--wb:<group>:<seq>-->` followed by the fragment HTML, which the htmx websocket
extension swaps in by id; static/js/realtime.js reads the comment to spot gaps.

A page viewing a joined group with presence (a case) sends `{"type": "presence", "case": 12}` as
a heartbeat and adds `"typing": true|false` as the agent types (static/js/case.js); see
workbench/presence.py. Only a user who may read that case takes part; the socket's first
heartbeat gets the current "Also here" fragment (unmarked) when nothing changed for the group.

Close codes: 4401 not signed in, 4403 a group the role may not read (or presence on a case the
user may not read, or in a group the socket has not joined), 1003 a binary frame, 1007 a frame
that is not a JSON object or a malformed presence frame, 1009 a frame over
REALTIME_MAX_FRAME_BYTES.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from workbench import presence, realtime, roles

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_UNSUPPORTED = 1003
CLOSE_INVALID = 1007
CLOSE_TOO_BIG = 1009
MAX_GROUPS = 50

# One render per (group, seq, roles) per process, shared by every socket that waits for it:
# a thousand agents watching one queue cost one render, not a thousand.
_RENDERED: OrderedDict[tuple, asyncio.Future] = OrderedDict()
_RENDERED_MAX = 512


class HubConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.user = self.scope.get("user")
        self.joined: set[str] = set()
        # Presence of this socket: the groups it is present in (read access re-checked at each
        # heartbeat), a typing rate limit per group, and the timers that settle typing later.
        self.present: set[str] = set()
        self.typing_gates: dict[str, presence.TypingGate] = {}
        self.timers: dict[tuple[str, str], asyncio.Task] = {}
        await self.accept()
        if self.user is None or not self.user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        requested = query.get("group", [])[:MAX_GROUPS]
        self.role_key = await database_sync_to_async(roles.roles_of)(self.user)
        for name in requested:
            if not await self.join(name):
                return

    async def join(self, name: object) -> bool:
        """Join a group the user may read; close the socket (4403) on any other."""
        allowed = await database_sync_to_async(realtime.can_subscribe)(self.user, name)
        if not allowed:
            await self.close(code=CLOSE_FORBIDDEN)
            return False
        if name not in self.joined and len(self.joined) < MAX_GROUPS:
            await self.channel_layer.group_add(realtime.layer_group(name), self.channel_name)
            self.joined.add(name)
        return True

    async def disconnect(self, code: int) -> None:
        for task in getattr(self, "timers", {}).values():
            task.cancel()
        for name in getattr(self, "joined", ()):
            await self.channel_layer.group_discard(realtime.layer_group(name), self.channel_name)
        for name in list(getattr(self, "present", ())):
            await self._presence(presence.leave, group=name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if bytes_data is not None:
            await self.close(code=CLOSE_UNSUPPORTED)
            return
        if text_data is None or len(text_data.encode()) > settings.REALTIME_MAX_FRAME_BYTES:
            await self.close(code=CLOSE_TOO_BIG)
            return
        try:
            frame = json.loads(text_data)
        except ValueError:
            await self.close(code=CLOSE_INVALID)
            return
        if not isinstance(frame, dict):
            await self.close(code=CLOSE_INVALID)
            return
        if "subscribe" in frame:
            await self.join(frame["subscribe"])
        elif "unsubscribe" in frame and frame["unsubscribe"] in self.joined:
            name = frame["unsubscribe"]
            self.joined.discard(name)
            await self.channel_layer.group_discard(realtime.layer_group(name), self.channel_name)
            if name in self.present:
                self.present.discard(name)
                await self._presence(presence.leave, group=name)
        elif frame.get("type") == "presence":
            await self.receive_presence(frame)
        # Anything else (htmx's ws-send of a form, say) has no meaning on the hub and is ignored.

    async def receive_presence(self, frame: dict) -> None:
        """A heartbeat or typing state for a joined group the user may read; refuse the rest."""
        try:
            update = presence.parse_frame(frame)
        except ValueError:
            await self.close(code=CLOSE_INVALID)
            return
        group = update.group
        if group not in self.joined:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        is_first = group not in self.present
        if is_first or update.typing is None:
            # Heartbeats re-check read access; typing frames in between use the last answer.
            allowed = await database_sync_to_async(presence.may_be_present)(self.user, update)
            if not allowed:
                await self.close(code=CLOSE_FORBIDDEN)
                return
        self.present.add(group)
        if update.typing is None:
            changed = await self._presence(presence.update_presence, group=group, typing=None)
        else:
            gate = self.typing_gates.setdefault(group, presence.TypingGate())
            if gate.offer(update.typing, now=time.monotonic()):
                changed = await self.relay_typing(group, update.typing)
            else:
                if gate.pending is not None:
                    wait = gate.wait_seconds(now=time.monotonic())
                    self._later(group, "flush", wait, lambda: self.flush(group))
                changed = False
        if is_first and not changed:
            # Nobody hears of a page that changed nothing for the others; it still needs the state.
            await self.send_presence(update)

    async def relay_typing(self, group: str, typing: bool) -> bool:
        changed = await self._presence(presence.update_presence, group=group, typing=typing)
        if typing:
            # With no further keystroke event the state runs out: tell the others when it has.
            settle = presence.TYPING_SECONDS + 0.25
            self._later(group, "expire", settle, lambda: self.expire(group))
        return changed

    async def flush(self, group: str) -> None:
        """Relay the typing state that waited for the rate limit, if it is still the latest."""
        gate = self.typing_gates.get(group)
        if gate is None or gate.pending is None or group not in self.present:
            return
        if gate.offer(gate.pending, now=time.monotonic()):
            await self.relay_typing(group, gate.relayed)

    async def expire(self, group: str) -> None:
        await database_sync_to_async(presence.expire_presence)(group=group)

    def _later(self, group: str, what: str, delay: float, action) -> None:
        """Run `action()` after `delay` seconds, replacing this socket's pending one of the kind."""
        key = (group, what)
        previous = self.timers.get(key)
        if previous is not None and not previous.done():
            previous.cancel()

        async def run() -> None:
            await asyncio.sleep(delay)
            try:
                await action()
            except Exception:
                logger.exception("presence %s failed for %s", what, group)

        self.timers[key] = asyncio.get_running_loop().create_task(run())

    async def _presence(self, service, *, group: str, **kwargs) -> bool:
        """Call a presence service for this socket; a failure (Redis away) is logged, not fatal:
        presence is a courtesy and the page works without it."""
        try:
            return await database_sync_to_async(service)(
                group=group, user_id=self.user.pk, socket=self.channel_name, **kwargs
            )
        except Exception:
            logger.exception("presence update failed for %s", group)
            return False

    async def send_presence(self, update: presence.Update) -> None:
        """The current presence fragment for this user alone (no sequence: it is not an event)."""
        fragment = realtime.fragment_for(presence.event_of(update.kind))
        if fragment is None:
            return
        try:
            html = await database_sync_to_async(fragment.render)(self.user, pk=update.pk)
        except Exception:
            logger.exception("could not render presence for %s", update.group)
            return
        if html:
            await self.send(text_data=html)

    async def wb_event(self, message: dict) -> None:
        fragment = realtime.fragment_for(message["event"])
        if fragment is None or message["group"] not in self.joined:
            return
        try:
            html = await self.rendered(fragment, message)
        except Exception:
            logger.exception("could not render %s for %s", message["event"], message["group"])
            return
        await self.send(text_data=f"<!--wb:{message['group']}:{message['seq']}-->{html}")

    async def rendered(self, fragment: realtime.Fragment, message: dict) -> str:
        who = self.user.pk if fragment.per_user else self.role_key
        key = (message["group"], message["seq"], who)
        future = _RENDERED.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            _RENDERED[key] = future
            if len(_RENDERED) > _RENDERED_MAX:
                _RENDERED.popitem(last=False)
            try:
                html = await database_sync_to_async(fragment.render)(self.user, **message["data"])
            except Exception as exc:
                _RENDERED.pop(key, None)
                future.set_exception(exc)
                future.exception()  # retrieved: other waiters see it, asyncio does not warn
                raise
            future.set_result(html)
        return await future
