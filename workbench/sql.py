"""Small set-based writes the ORM makes expensive (it imports no app; the apps use it)."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connection, models


def update_rows(objects: Sequence[models.Model], fields: Sequence[str]) -> None:
    """Save `fields` of each object by primary key: one UPDATE per row, pipelined in a single
    round trip (psycopg's executemany).

    What `QuerySet.bulk_update` does, without its cost: bulk_update builds a CASE WHEN per
    field and row and resolves every one of them as an expression, which took longer than
    sending a campaign's mail (`bench dispatch`). Values go through each field's own
    `get_db_prep_save`, as `save()` would; no signals are sent (bulk_update sends none either).
    """
    if not objects:
        return
    meta = objects[0]._meta
    quote = connection.ops.quote_name
    concrete = [meta.get_field(name) for name in fields]
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in concrete)
    statement = (
        f"UPDATE {quote(meta.db_table)} SET {assignments}"  # noqa: S608 (quoted identifiers)
        f" WHERE {quote(meta.pk.column)} = %s"
    )
    rows = [
        [field.get_db_prep_save(getattr(obj, field.attname), connection) for field in concrete]
        + [obj.pk]
        for obj in objects
    ]
    with connection.cursor() as cursor:
        cursor.executemany(statement, rows)
