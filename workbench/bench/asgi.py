"""ASGI entry point for benchmarks: Workbench as served, plus bare floors to measure it against.

`/floor` answers "ok" without Django, and `/ws/floor/` is a socket in the channel-layer group
`FLOOR_GROUP` that forwards each message's HTML as it comes (no auth, no rendering): what the
same Daphne and channel layer cost with nothing of ours on top. Everything else goes to
`workbench.asgi.application`. Benchmarks only; never routed in production.
"""

from channels.generic.websocket import AsyncWebsocketConsumer

from workbench.asgi import application as workbench_application

FLOOR_PATH = "/floor"
FLOOR_WS_PATH = "/ws/floor/"
FLOOR_GROUP = "wbbench.floor"
FLOOR_EVENT = "bench.floor"  # the message type; the consumer's handler is bench_floor
FLOOR_LABEL = "floor"  # what the frame's <!--wb:LABEL:SEQ--> prefix says

_OK_HEADERS = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"2")]


async def floor_http(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": _OK_HEADERS})
    await send({"type": "http.response.body", "body": b"ok"})


class FloorConsumer(AsyncWebsocketConsumer):
    # Joined before the handshake completes, so an open socket is already in the group.
    groups = [FLOOR_GROUP]

    async def bench_floor(self, message: dict) -> None:
        await self.send(text_data=f"<!--wb:{FLOOR_LABEL}:{message['seq']}-->{message['html']}")


floor_websocket = FloorConsumer.as_asgi()


async def application(scope, receive, send) -> None:
    if scope["type"] == "http" and scope["path"] == FLOOR_PATH:
        return await floor_http(scope, receive, send)
    if scope["type"] == "websocket" and scope["path"] == FLOOR_WS_PATH:
        return await floor_websocket(scope, receive, send)
    return await workbench_application(scope, receive, send)
