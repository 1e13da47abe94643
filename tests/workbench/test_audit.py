"""The audit log is append-only in the model and in the database itself."""

import pytest
from django.db import connection, transaction
from django.db.utils import InternalError, ProgrammingError

from workbench.audit import record_audit
from workbench.models import AuditEntry


def test_sign_in_is_written_to_the_audit_log(client, agent):
    from tests.factories import PASSWORD

    client.post(
        "/accounts/login/", {"username": "ada", "password": PASSWORD}, REMOTE_ADDR="10.0.0.7"
    )
    [entry] = AuditEntry.objects.filter(action="sign_in")
    assert (entry.actor, entry.actor_label, entry.ip_address) == (agent, "ada", "10.0.0.7")
    assert (entry.target_type, entry.target_id) == ("workbench.user", str(agent.pk))


def test_audit_entries_refuse_update_and_delete_through_the_orm(agent):
    entry = record_audit(actor=agent, action="test", details={"n": 1})
    entry.action = "rewritten"
    with pytest.raises(TypeError, match="append-only"):
        entry.save()
    with pytest.raises(TypeError, match="append-only"):
        entry.delete()
    with pytest.raises(TypeError, match="append-only"):
        AuditEntry.objects.filter(pk=entry.pk).update(action="x")
    with pytest.raises(TypeError, match="append-only"):
        AuditEntry.objects.all().delete()
    assert AuditEntry.objects.get(pk=entry.pk).action == "test"


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE workbench_auditentry SET action = 'rewritten'",
        "DELETE FROM workbench_auditentry",
    ],
)
def test_the_database_refuses_raw_update_and_delete(agent, sql):
    entry = record_audit(actor=agent, action="test")
    refused = pytest.raises((InternalError, ProgrammingError), match="append-only")
    with refused, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)
    assert AuditEntry.objects.get(pk=entry.pk).action == "test"
