"""The CCO's console: the dashboard (charts over service and marketing, live sign-ins, backlog,
agents online and held touches), and the levers (contact policy, overrides, people, audit log,
engagement) in the submodules. Every page and download here is the CCO's alone (403 otherwise).
"""

from __future__ import annotations

from django.urls import include, path

from workbench.console import audit_log, engagement_pages, home, overrides, people, policy
from workbench.console.home import SIGN_IN, render_sign_ins

__all__ = ["SIGN_IN", "render_sign_ins", "urls"]

urlpatterns = [
    path("", home.console_home, name="home"),
    path("live/", home.console_live, name="live"),
    path("charts/<slug:key>.csv", home.chart_csv, name="chart_csv"),
    path("engagement/", engagement_pages.engagement, name="engagement"),
    path("policy/", policy.policy_editor, name="policy"),
    path("overrides/", overrides.override_list, name="overrides"),
    path("overrides/<int:pk>/decide/", overrides.decide, name="override_decide"),
    path("audit/", audit_log.audit_list, name="audit"),
    path("audit.csv", audit_log.audit_csv, name="audit_csv"),
    path("people/", people.people_list, name="people"),
    path("people/invite/", people.invite, name="people_invite"),
    path("people/<int:pk>/", people.edit_person, name="person"),
    path("people/<int:pk>/deactivate/", people.deactivate, name="person_deactivate"),
]
urls = include((urlpatterns, "console"))
