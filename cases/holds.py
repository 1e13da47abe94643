"""The lock on a customer's marketing state, and who hears when that state changes.

Service decides what holds marketing back (open commitments, complaint cases, pauses, cool-off);
campaigns decides whether a touch may go. Both sides take `lock_marketing_state` in the
transaction that changes or reads that state, so they serialise; cases announces a change with
`marketing_state_changed`, and campaigns (which cases may not import) registers a listener that
re-evaluates the customer's waiting touches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import connection, transaction

logger = logging.getLogger(__name__)

_listeners: list[Callable[[int], None]] = []


def lock_marketing_state(customer_id: int) -> None:
    """Lock the customer's row (SELECT … FOR UPDATE) until the current transaction ends.

    Why a row lock on the customer: the facts that hold marketing live in several tables
    (commitments, cases, consents, sent touches), and a new commitment is an INSERT, which no
    lock on existing rows would block. Both writers take this one lock instead: an agent
    recording a commitment, pausing marketing or changing a case, and the dispatcher marking a
    touch sent (it evaluates the policy after taking the lock). Their transactions therefore run
    one after the other for that customer, and under READ COMMITTED every statement the later
    one runs after the lock sees what the earlier one committed: a commitment recorded one
    second before the send is seen by the send-time check, and a send committed first happened,
    truly, before the commitment. Other customers are not blocked, and no lock is held longer
    than the writer's own short transaction. An advisory lock would work too, but is invisible
    to `pg_locks` readers and to anyone who forgets it; the row is what everyone already reads.

    Must run inside a transaction (the lock would end at once otherwise). Lock order, to stay
    free of deadlocks: a writer locks its own rows (case, commitment, touch) first and the
    customer last.
    """
    if not connection.in_atomic_block:
        raise transaction.TransactionManagementError(
            "lock_marketing_state needs a transaction: the lock lasts until it ends"
        )
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM customers_customer WHERE id = %s FOR UPDATE", [customer_id])


def register_marketing_state_listener(listener: Callable[[int], None]) -> None:
    """Call `listener(customer_id)` after the commit of every change to a customer's marketing
    state. Registering the same function twice registers it once."""
    if listener not in _listeners:
        _listeners.append(listener)


def unregister_marketing_state_listener(listener: Callable[[int], None]) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def marketing_state_changed(customer_id: int) -> None:
    """Announce, after the current transaction commits (never if it rolls back), that what
    holds marketing for this customer may have changed. A failing listener is logged and does
    not undo the committed change: the send-time check is the guarantee, this is the courtesy
    that moves waiting touches early."""

    def notify() -> None:
        for listener in list(_listeners):
            try:
                listener(customer_id)
            except Exception:
                logger.exception("marketing state listener %r failed", listener)

    transaction.on_commit(notify)
