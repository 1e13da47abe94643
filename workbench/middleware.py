"""Every page needs a signed-in user with a role; this middleware is the one place that says so.

Views marked `login_not_required` (sign-in, /healthz, the no-role page) pass; the API answers
for itself (DRF's 401/403 in JSON). Anyone else signed out goes to the sign-in page; a signed-in
user in no group gets the "no role yet" page (403) on every URL.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.utils import timezone

from workbench import roles
from workbench.views import no_role


class AccessMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        # Times on pages read in the viewer's own zone (fragments pushed over the websocket
        # pass the viewer explicitly, as no middleware runs there).
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and user.timezone:
            timezone.activate(user.timezone)
        else:
            timezone.deactivate()
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        if not getattr(view_func, "login_required", True):
            return None
        if request.path_info.startswith(("/api/", settings.STATIC_URL)):
            return None
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not roles.has_role(request.user):
            return no_role(request)
        return None
