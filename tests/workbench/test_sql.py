"""workbench.sql: prepared statements, rows back into models, one-statement inserts."""

import pytest
from django.db import IntegrityError, connection
from django.test.utils import CaptureQueriesContext

from customers.models import Customer, Interaction
from workbench import sql

pytestmark = pytest.mark.django_db


def prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def test_a_prepared_cursor_plans_its_statement_once_on_the_server_and_logs_it():
    statement = "SELECT display_name FROM customers_customer WHERE id = %s"
    ann = Customer.objects.create(display_name="Ann")
    with CaptureQueriesContext(connection) as queries:
        for _ in range(3):
            with sql.prepared_cursor() as cursor:
                cursor.execute(statement, [ann.pk])
                assert cursor.fetchone() == ("Ann",)

    # Once, however often it ran (the connection may hold other tests' statements too).
    assert prepared_statements().count(statement.replace("%s", "$1")) == 1
    assert len(queries) == 3 and "customers_customer" in queries[0]["sql"]


def test_a_prepared_cursor_raises_djangos_errors():
    with pytest.raises(IntegrityError), sql.prepared_cursor() as cursor:
        cursor.execute("INSERT INTO customers_customer (id) VALUES (NULL)")


def test_insert_fills_auto_now_add_and_returns_false_on_a_conflict_leaving_the_object_unsaved():
    ann = Customer.objects.create(display_name="Ann")
    first = Interaction(customer=ann, channel="email", kind="message", direction="in",
                        occurred_at=ann.created_at, external_id="m-1", data={"a": 1})  # fmt: skip
    twin = Interaction(customer=ann, channel="email", kind="message", direction="in",
                       occurred_at=ann.created_at, external_id="m-1")  # fmt: skip
    target = "(channel, external_id) WHERE external_id IS NOT NULL"

    assert sql.insert(first, on_conflict=target) is True
    assert sql.insert(twin, on_conflict=target) is False

    assert first.pk and first.created_at and not first._state.adding
    assert twin.pk is None and twin._state.adding
    stored = Interaction.objects.get()
    assert (stored.pk, stored.data) == (first.pk, {"a": 1})


def test_from_row_builds_the_model_the_orm_would():
    ann = Customer.objects.create(display_name="Ann", attributes={"plan": "vip"})
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {sql.columns(Customer, 'c')} FROM customers_customer c")  # noqa: S608
        built = sql.from_row(Customer, cursor.fetchone())
    fetched = Customer.objects.get()
    assert built == fetched and built.pk == ann.pk
    assert built.attributes == {"plan": "vip"} and built.created_at == fetched.created_at
    assert not built._state.adding


def test_fetch_returns_the_matching_row_as_a_model_or_none():
    ann = Customer.objects.create(display_name="Ann", attributes={"plan": "vip"})
    Customer.objects.create(display_name="Bob")

    found = sql.fetch(Customer, "display_name = %s", ["Ann"])
    assert found == ann and found.attributes == {"plan": "vip"}
    assert sql.fetch(Customer, "display_name = %s", ["Nobody"]) is None
