"""Who may do what: the role predicates (the `rules` package) every door and service checks.

Roles are Django groups created by a data migration. Predicates take the user (and, where a
rule is about one thing, that thing); compose them with | and &. Object-level predicates that
read an app's fields live with that app but are built from these.
"""

from __future__ import annotations

import rules

AGENT = "agent"
SUPERVISOR = "supervisor"
MARKETER = "marketer"
CCO = "cco"
ROLES = (AGENT, SUPERVISOR, MARKETER, CCO)

is_agent = rules.is_group_member(AGENT)
is_supervisor = rules.is_group_member(SUPERVISOR)
is_marketer = rules.is_group_member(MARKETER)
is_cco = rules.is_group_member(CCO)

has_role = is_agent | is_supervisor | is_marketer | is_cco
is_service = is_agent | is_supervisor

# What each role may open. The CCO reads everything; only service works cases and only
# marketing edits campaigns (DESIGN.md, "Who uses it").
can_read_cases = is_service | is_cco
can_work_cases = is_service
can_read_campaigns = is_marketer | is_cco
can_edit_campaigns = is_marketer
can_read_customers = has_role
# Private notes are service's working notes: marketing sees that one exists, never its body.
can_read_private_notes = is_service | is_cco
# Merging customers rewrites history: supervisors and the CCO only.
can_merge_customers = is_supervisor | is_cco
# Imports create customers in bulk for campaigns; privacy requests are the CCO's alone.
can_import_customers = is_marketer | is_cco
can_handle_privacy = is_cco
# Agents record what the customer says about consent; marketers may not grant it themselves.
can_record_consent = is_service | is_cco
# Profile edits (name, stage, attributes, identities): service and the CCO; marketing reads.
can_edit_customers = is_service | is_cco
can_open_console = is_cco
# Canned responses (macros) are what agents send in service's name: supervisors and the CCO
# write them, service uses them, everyone who reads cases may look at the list.
can_manage_macros = is_supervisor | is_cco
can_read_macros = can_read_cases
# An @mention points at a private note, so only those who read private notes can be mentioned.
can_be_mentioned = can_read_private_notes


@rules.predicate
def is_same_user(user, pk) -> bool:
    """The `user.<id>` realtime group (a person's notifications) is theirs alone."""
    return getattr(user, "pk", None) is not None and user.pk == pk


# Named permissions, so templates can ask `perms.cases.view_queue` and views can use
# rules' permission_required; each is exactly one of the predicates above.
rules.add_perm("workbench.open_console", can_open_console)
rules.add_perm("customers.view_customers", can_read_customers)
rules.add_perm("customers.import_customers", can_import_customers)
rules.add_perm("cases.view_queue", can_read_cases)
rules.add_perm("campaigns.view_campaigns", can_read_campaigns)
rules.add_perm("campaigns.edit_campaigns", can_edit_campaigns)
rules.add_perm("cases.view_macros", can_read_macros)
rules.add_perm("cases.manage_macros", can_manage_macros)

# Where each role lands after sign-in, most senior first for a user holding several roles.
_HOMES = ((CCO, "console:home"), (SUPERVISOR, "cases:queue"), (AGENT, "cases:queue"),
          (MARKETER, "campaigns:list"))  # fmt: skip


def roles_of(user) -> frozenset[str]:
    """The role names a user holds (cached on the user object like rules does)."""
    if not getattr(user, "is_authenticated", False):
        return frozenset()
    if not hasattr(user, "_group_names_cache"):
        user._group_names_cache = set(user.groups.values_list("name", flat=True))
    return frozenset(user._group_names_cache) & frozenset(ROLES)


def home_url_name(user) -> str | None:
    """The URL name of the user's home page, or None for a user with no role yet."""
    held = roles_of(user)
    for role, url_name in _HOMES:
        if role in held:
            return url_name
    return None
