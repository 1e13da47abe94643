"""The contact policy starts at version 1 with DESIGN.md's defaults, so every check has a policy."""

from django.db import migrations


def create_first_policy(apps, schema_editor):
    ContactPolicy = apps.get_model("campaigns", "ContactPolicy")
    if not ContactPolicy.objects.exists():
        ContactPolicy.objects.create(
            version=1,
            complaint_priorities=["high", "urgent"],
            complaint_topics=["complaint"],
            change_note="First version: the defaults Workbench ships with.",
        )


def remove_first_policy(apps, schema_editor):
    apps.get_model("campaigns", "ContactPolicy").objects.filter(version=1).delete()


class Migration(migrations.Migration):
    dependencies = [("campaigns", "0001_segments_campaigns_touches_policy")]
    operations = [migrations.RunPython(create_first_policy, remove_first_policy)]
