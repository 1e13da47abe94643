"""ASGI entry point: HTTP goes to Django; websockets to the realtime hub (signed-in users only,
from our own hosts) or to live chat (anonymous visitors, from the origins the CCO allowed)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workbench.settings")
# Django must be set up before the consumers (and the models they use) are imported.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from workbench.connectors.chat import ChatConsumer  # noqa: E402
from workbench.consumers import HubConsumer  # noqa: E402

# The chat socket checks its Origin itself (other sites embed the widget) and never sees the
# session; the hub keeps the allowed-hosts check and the signed-in user.
websocket_urlpatterns = [
    path("ws/hub/", AllowedHostsOriginValidator(AuthMiddlewareStack(HubConsumer.as_asgi()))),
    path("ws/chat/", ChatConsumer.as_asgi()),
]

application = ProtocolTypeRouter(
    {"http": django_asgi_app, "websocket": URLRouter(websocket_urlpatterns)}
)
