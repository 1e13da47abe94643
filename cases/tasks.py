"""Celery tasks of cases: beat-driven sweeps, each a door to one service and safe to run twice."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from cases.commitments import flag_overdue_commitments
from cases.lifecycle import close_solved_cases
from cases.sla import check_sla_breaches

FLAG_OVERDUE_TASK = "cases.flag_overdue_commitments"
CLOSE_SOLVED_TASK = "cases.close_solved_cases"
CHECK_SLA_TASK = "cases.check_sla_breaches"


@shared_task(name=FLAG_OVERDUE_TASK, acks_late=True, reject_on_worker_lost=True)
def flag_overdue_commitments_task() -> int:
    """Flag commitments past due and break those past their grace; returns how many changed."""
    return flag_overdue_commitments(now=timezone.now())


@shared_task(name=CLOSE_SOLVED_TASK, acks_late=True, reject_on_worker_lost=True)
def close_solved_cases_task() -> int:
    """Close cases solved longer ago than their queue's auto_close_days; returns how many."""
    return close_solved_cases(now=timezone.now())


@shared_task(name=CHECK_SLA_TASK, acks_late=True, reject_on_worker_lost=True)
def check_sla_breaches_task() -> int:
    """Record SLA targets that passed their due time; returns how many cases changed."""
    return check_sla_breaches(now=timezone.now())
