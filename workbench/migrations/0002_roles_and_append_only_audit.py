"""The four roles as groups, and a trigger that makes the audit log append-only in the database.

TRUNCATE is left to the database owner: it is how test databases are flushed, and no request
path of the application can issue it.
"""

from django.db import migrations

ROLES = ("agent", "supervisor", "marketer", "cco")


def create_roles(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for name in ROLES:
        Group.objects.get_or_create(name=name)


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


APPEND_ONLY = """
CREATE FUNCTION workbench_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER workbench_audit_append_only
    BEFORE UPDATE OR DELETE ON workbench_auditentry
    FOR EACH ROW EXECUTE FUNCTION workbench_audit_append_only();
"""

DROP_APPEND_ONLY = """
DROP TRIGGER IF EXISTS workbench_audit_append_only ON workbench_auditentry;
DROP FUNCTION IF EXISTS workbench_audit_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("workbench", "0001_users_and_audit_log"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.RunPython(create_roles, remove_roles),
        migrations.RunSQL(APPEND_ONLY, DROP_APPEND_ONLY),
    ]
