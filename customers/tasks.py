"""Celery tasks of customers: doors that take ids, re-fetch, and are safe to run twice."""

from __future__ import annotations

from celery import shared_task

from customers.engagement import COMPUTE_TASK, compute_engagement
from customers.importing import IMPORT_TASK, run_import


@shared_task(name=IMPORT_TASK, acks_late=True, reject_on_worker_lost=True)
def import_customers_task(job_id: int) -> str | None:
    """Import an uploaded CSV (see customers.importing.run_import): returns the job's status.

    Idempotent: a finished job returns at once; a redelivered one resumes after its last
    committed chunk.
    """
    job = run_import(job_id=job_id)
    return job.status if job is not None else None


@shared_task(name=COMPUTE_TASK, acks_late=True, reject_on_worker_lost=True)
def compute_engagement_task() -> dict:
    """Nightly: recompute every customer's engagement and value (customers.engagement).
    Idempotent: a second run writes the same numbers."""
    run = compute_engagement()
    return {"customers": run.customers, "interactions": run.interactions, "seconds": run.seconds}
