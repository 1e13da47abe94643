"""Two partial indexes on the timeline for outbound delivery: the sweep's in-flight rows
(workbench.connectors.delivery.sweep_stuck_deliveries) and the receipts' lookup by the
provider's message id (workbench.connectors.email_inbound.mark_delivery).

Built CONCURRENTLY (hence not atomic): the timeline is the biggest table, and a plain CREATE
INDEX would block every write to it while it builds. Reversible (dropped concurrently too).

PostgreSQL keeps no statistics for the expression of a PARTIAL index, so it would guess that
0.5% of the timeline shares a provider id, and for the receipt's `ORDER BY id LIMIT 1` walk the
primary key instead. Expression statistics (PostgreSQL 14+, built by ANALYZE) tell it the id
is unique, and it reads the index.
"""

import django.db.models.fields.json
import django.db.models.lookups
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("customers", "0002_engagement_scores"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="interaction",
            index=models.Index(
                condition=models.Q(("direction", "out"), ("status__in", ("queued", "sending"))),
                fields=["created_at", "id"],
                name="outbound_in_flight",
            ),
        ),
        AddIndexConcurrently(
            model_name="interaction",
            index=models.Index(
                django.db.models.fields.json.KeyTransform("provider_message_id", "data"),
                condition=models.Q(
                    django.db.models.lookups.IsNull(
                        django.db.models.fields.json.KeyTransform("provider_message_id", "data"),
                        False,
                    ),
                    ("direction", "out"),
                ),
                name="outbound_by_provider_id",
            ),
        ),
        migrations.RunSQL(
            sql=(
                "CREATE STATISTICS IF NOT EXISTS interaction_provider_id_stats "
                "ON (data -> 'provider_message_id') FROM customers_interaction"
            ),
            reverse_sql="DROP STATISTICS IF EXISTS interaction_provider_id_stats",
        ),
    ]
