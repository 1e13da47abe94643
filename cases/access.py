"""Who may read and work which case: the team rule every door, service and live group shares.

A person's team is the queues they are a member of (`Queue.members`, as the reports page counts
it). Agents and supervisors read and work the cases of their queues and the cases assigned to
them; a supervisor also sees every open case of their queues ("All open") and assigns them. The
CCO reads every case and works none; marketing reads none. Pages, the API, the services, the
realtime groups, presence and @mentions all ask these functions, so the rule has one home.
"""

from __future__ import annotations

import rules

from cases.models import Case
from workbench import roles


def member_queue_ids(user) -> list[int]:
    """The queues the user belongs to (cached on the user object for the request)."""
    if not hasattr(user, "_case_queue_ids"):
        user._case_queue_ids = list(user.queues.values_list("id", flat=True))
    return user._case_queue_ids


def sees_all_cases(user) -> bool:
    """Only the CCO reads every case; service reads its team's queues (and its own cases)."""
    return bool(roles.is_cco(user))


def visible_queue_ids(user) -> list[int] | None:
    """The queues whose cases the user reads: None for every queue (the CCO), else their team."""
    return None if sees_all_cases(user) else member_queue_ids(user)


def can_read_case(user, case: Case) -> bool:
    """The CCO reads every case; service the cases of its queues and those assigned to it."""
    if not roles.can_read_cases(user):
        return False
    if sees_all_cases(user):
        return True
    return case.assignee_id == user.pk or case.queue_id in member_queue_ids(user)


def can_work_case(user, case: Case) -> bool:
    """Service works the cases it reads; the CCO reads every case but works none."""
    return bool(roles.can_work_cases(user)) and can_read_case(user, case)


def may_assign_to_others(user, case: Case) -> bool:
    """A supervisor (re)assigns the cases of their own queues; anyone else takes or gives back."""
    return bool(roles.is_supervisor(user)) and case.queue_id in member_queue_ids(user)


@rules.predicate
def may_join_case_group(user, pk) -> bool:
    """The `case.<id>` group (its header, presence, delivery): whoever may read that case."""
    if not roles.can_read_cases(user):
        return False
    if sees_all_cases(user):
        return True
    case = Case.objects.filter(pk=pk).only("id", "queue_id", "assignee_id").first()
    return case is not None and can_read_case(user, case)


@rules.predicate
def may_join_queue_group(user, pk) -> bool:
    """The `queue.<id>` group (the live queue list): the queue's members, and the CCO."""
    if not roles.can_read_cases(user):
        return False
    queue_ids = visible_queue_ids(user)
    return queue_ids is None or pk in queue_ids
