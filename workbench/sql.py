"""Small set-based writes the ORM makes expensive (it imports no app; the apps use it)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import psycopg
from django.db import connection, models
from django.db.backends.utils import CursorWrapper


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


def prepared_cursor() -> CursorWrapper:
    """A Django cursor whose statements PostgreSQL parses and plans once per connection.

    Django binds parameters on the client (each statement reaches the server as new text, to be
    parsed and planned again) and prepares nothing; this cursor binds them on the server and
    prepares each statement, so the next run of the same text on the connection skips the
    planner. For the few fixed statements every inbound message runs: preparing them halved
    PostgreSQL's CPU per message in `bench ingest`. Queries are logged and errors translated as
    with `connection.cursor()`. (Behind a transaction-pooling PgBouncer older than 1.21,
    prepared statements need its `max_prepared_statements`.)
    """
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    raw = connection.connection
    if raw.prepare_threshold is None:
        # Django turns psycopg's preparing off (None), which refuses even an explicit request; a
        # threshold no statement reaches allows those and still prepares nothing on its own.
        raw.prepare_threshold = _ONLY_WHEN_ASKED
    cursor = _PreparingCursor(raw)
    if connection.queries_logged:
        return connection.make_debug_cursor(cursor)
    return connection.make_cursor(cursor)


_ONLY_WHEN_ASKED = 2**62


class _PreparingCursor(psycopg.Cursor):
    """psycopg's server-binding cursor, preparing every statement it runs (psycopg keeps the
    connection's most recent ones and deallocates the rest)."""

    def execute(self, query, params=None, *, prepare=None, binary=None):
        super().execute(query, params, prepare=True, binary=binary)
        if self._query is None:
            # psycopg records the statement only when it sends its text; Django's query log
            # reads it from there, and a prepared run sends just the name.
            self._query = self._convert_query(query, params)
        return self


def columns(model: type[models.Model], alias: str = "") -> str:
    """The model's concrete columns in field order, quoted (and qualified by `alias`): a SELECT
    list whose row `from_row` turns back into an instance."""
    quote = connection.ops.quote_name
    prefix = f"{quote(alias)}." if alias else ""
    return ", ".join(f"{prefix}{quote(field.column)}" for field in model._meta.concrete_fields)


def from_row(model: type[models.Model], values: Sequence) -> models.Model:
    """The instance a row of `columns(model)` stands for, as the ORM would build it: each
    field's database converters (a JSON column's decoder, say), then `Model.from_db`."""
    converted = []
    for field, value in zip(model._meta.concrete_fields, values, strict=True):
        for converter in field.get_db_converters(connection):
            value = converter(value, field, connection)
        converted.append(value)
    names = [field.attname for field in model._meta.concrete_fields]
    return model.from_db(connection.alias, names, converted)


def fetch(model: type[models.Model], where: str, params: Sequence) -> models.Model | None:
    """The first row of `model` matching `where` (SQL over its columns, %s parameters), built
    as the ORM would, or None; through `prepared_cursor`. For a look-up by a unique key."""
    with prepared_cursor() as cursor:
        cursor.execute(_fetch_statement(model, where), params)
        row = cursor.fetchone()
    return from_row(model, row) if row is not None else None


@cache
def _fetch_statement(model: type[models.Model], where: str) -> str:
    table = connection.ops.quote_name(model._meta.db_table)
    return f"SELECT {columns(model)} FROM {table} WHERE {where}"  # noqa: S608 (the caller's SQL)


def insert_fields(model: type[models.Model]) -> list[models.Field]:
    """The fields an INSERT of a new `model` row writes: every concrete one but the
    database-generated (the auto primary key, generated columns)."""
    meta = model._meta
    return [f for f in meta.concrete_fields if not f.generated and f is not meta.auto_field]


def insert(obj: models.Model, *, on_conflict: str = "") -> bool:
    """INSERT one new object as `save()` would (its fields' `pre_save`, so `auto_now_add` is
    filled in, and `get_db_prep_save`) and give it its primary key; no signals are sent.

    `on_conflict` names a unique constraint's target, "(channel, external_id) WHERE
    external_id IS NOT NULL" say: a row that would break it is not inserted (ON CONFLICT DO
    NOTHING) and False is returned, the object left unsaved. One round trip either way, where
    `save()` in a savepoint that catches the IntegrityError costs three.
    """
    fields, statement = _insert_statement(type(obj), on_conflict)
    values = [field.get_db_prep_save(field.pre_save(obj, add=True), connection) for field in fields]
    with prepared_cursor() as cursor:
        cursor.execute(statement, values)
        row = cursor.fetchone()
    if row is None:
        return False
    obj.pk = row[0]
    obj._state.adding = False
    obj._state.db = connection.alias
    return True


@cache
def _insert_statement(model: type[models.Model], on_conflict: str) -> tuple[list, str]:
    meta = model._meta
    quote = connection.ops.quote_name
    fields = insert_fields(model)
    statement = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)})"  # noqa: S608
        f" VALUES ({', '.join(['%s'] * len(fields))})"
        + (f" ON CONFLICT {on_conflict} DO NOTHING" if on_conflict else "")
        + f" RETURNING {quote(meta.pk.column)}"
    )
    return fields, statement
