"""The audit log page: filters, keyset pages, CSV export (itself audited), the CCO only, and an
admin that offers no way to change or delete an entry."""

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib import admin
from django.test import RequestFactory

from workbench.audit import record_audit
from workbench.console import audit_log
from workbench.models import AuditEntry

pytestmark = pytest.mark.django_db


def entry_at(when, **fields):
    """An entry with a chosen time: written by the one insert path, then its time set by SQL the
    trigger allows only for this test's fixture (the trigger refuses UPDATE, so we insert)."""
    from django.db import connection

    fields.setdefault("details", {})
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO workbench_auditentry (created_at, actor_id, actor_label, action, "
            "target_type, target_id, target_label, details, ip_address) "
            "VALUES (%s, NULL, %s, %s, %s, %s, %s, '{}'::jsonb, NULL)",
            [
                when,
                fields.get("actor_label", "system"),
                fields["action"],
                fields.get("target_type", ""),
                fields.get("target_id", ""),
                fields.get("target_label", ""),
            ],
        )


@pytest.fixture
def log():
    base = datetime(2026, 3, 10, 12, tzinfo=UTC)
    entry_at(
        base,
        actor_label="carla",
        action="policy.changed",
        target_type="campaigns.contactpolicy",
        target_id="2",
        target_label="contact policy v2",
    )
    entry_at(
        base + timedelta(days=1),
        actor_label="mia",
        action="campaign.override_requested",
        target_label="override 4",
    )
    entry_at(
        base + timedelta(days=2),
        actor_label="carla",
        action="campaign.override_approved",
        target_label="override 4",
    )
    entry_at(
        base + timedelta(days=5),
        actor_label="sam",
        action="customer.merged",
        target_label="Ann Lee",
    )
    return base


@pytest.mark.parametrize("role", ["agent", "supervisor", "marketer"])
@pytest.mark.parametrize("url", ["/console/audit/", "/console/audit.csv"])
def test_audit_log_refuses_other_roles_and_records_no_export(client_for, make_user, role, url):
    client = client_for(make_user(role))
    assert client.get(url).status_code == 403
    assert not AuditEntry.objects.filter(action="audit.exported").exists()


def test_filters_by_actor_action_target_and_dates(client_for, cco, log):
    client = client_for(cco)

    def actions(**query):
        page = client.get("/console/audit/", query).text
        return [part.split('"')[0] for part in page.split('data-action="')[1:]]

    assert actions(actor="carla") == ["campaign.override_approved", "policy.changed"]
    assert actions(action="override") == [
        "campaign.override_approved",
        "campaign.override_requested",
    ]
    assert actions(target="override 4", actor="mia") == ["campaign.override_requested"]
    assert actions(target="campaigns.contactpolicy") == ["policy.changed"]
    assert actions(date_from="2026-03-11", date_to="2026-03-12") == [
        "campaign.override_approved",
        "campaign.override_requested",
    ]
    assert actions(actor="nobody") == []
    assert "No entry matches these filters." in client.get("/console/audit/?actor=nobody").text


def test_pages_by_keyset_newest_first(client_for, cco, log, monkeypatch):
    monkeypatch.setattr(audit_log, "PAGE_SIZE", 2)
    client = client_for(cco)
    first = client.get("/console/audit/", {"date_to": "2026-03-31"}).text
    assert first.count('data-action="') == 2
    assert 'data-action="customer.merged"' in first
    next_url = first.split('<a href="')[-1].split('" rel="next"')[0].replace("&amp;", "&")
    second = client.get("/console/audit/" + next_url).text
    assert [p.split('"')[0] for p in second.split('data-action="')[1:]] == [
        "campaign.override_requested",
        "policy.changed",
    ]
    assert 'rel="next"' not in second


def test_a_broken_cursor_is_a_400_not_a_crash(client_for, cco):
    assert client_for(cco).get("/console/audit/?after=nonsense").status_code == 400


def test_csv_export_holds_the_filtered_rows_and_is_itself_audited(client_for, cco, log):
    response = client_for(cco).get(
        "/console/audit.csv", {"actor": "carla", "date_to": "2026-03-31"}
    )
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="audit-log.csv"'
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == [
        "when",
        "actor",
        "action",
        "target_type",
        "target_id",
        "target",
        "ip",
        "details",
    ]
    assert [(r[1], r[2], r[5]) for r in rows[1:]] == [
        ("carla", "campaign.override_approved", "override 4"),
        ("carla", "policy.changed", "contact policy v2"),
    ]
    assert rows[2][0] == "2026-03-10T12:00:00+00:00"
    [export] = AuditEntry.objects.filter(action="audit.exported")
    assert export.actor == cco
    assert export.details == {"filters": {"actor": "carla", "date_to": "2026-03-31"}, "rows": 2}


def test_page_shows_the_sign_in_the_test_client_made(client_for, cco):
    record_audit(actor=cco, action="user.invited", details={"roles": ["agent"]})
    page = client_for(cco).get("/console/audit/").text
    assert 'data-action="user.invited"' in page
    assert "<strong>roles</strong>: [&#x27;agent&#x27;]" in page


def test_admin_offers_no_add_change_or_delete_for_audit_entries(client, make_user):
    boss = make_user("cco", username="root", is_staff=True, is_superuser=True)
    entry = record_audit(actor=boss, action="test")
    client.force_login(boss)
    model_admin = admin.site._registry.get(AuditEntry)
    if model_admin is None:
        # Not in the admin at all: no page to add, change or delete from.
        assert client.get("/admin/workbench/auditentry/").status_code == 404
        assert client.get(f"/admin/workbench/auditentry/{entry.pk}/delete/").status_code == 404
        return
    request = RequestFactory().get("/admin/")
    request.user = boss
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request, entry)
    assert not model_admin.has_delete_permission(request, entry)
