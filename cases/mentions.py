"""@mentions in internal notes: who a note names, and telling those who may read it.

`@ada` in a note on a case notifies the user `ada` when they hold a service role or are the CCO
(marketing never reads private notes, so it cannot be mentioned) and may read that case
(`cases.access`): an agent or supervisor of its queue, its assignee, the CCO. A supervisor of
other queues cannot open the case, so is not told of it. Anyone else named, and any name
that is no user, is left out and reported back, never told.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.contrib.postgres.aggregates import ArrayAgg
from django.db.models.functions import Lower
from django.urls import reverse

from cases.access import sees_all_cases
from cases.models import Case
from customers.models import Interaction, Kind
from workbench import notifications, roles

# `@` then a username (Django's characters: letters, digits, _ . + -), not inside a word or an
# email address: "ann@example.com" has a letter before its @, so it names nobody.
MENTION = re.compile(r"(?<![\w@.+\-])@(?P<username>[\w.+\-]+)")
# Punctuation that ends a sentence ("thanks @ada.") is not part of the name.
TRAILING = ".+-"
MAX_MENTIONS = 20


@dataclass
class MentionResult:
    notified: list = field(default_factory=list)  # the users told, by username
    ignored: list[str] = field(default_factory=list)  # names written that were not told


def mentioned_usernames(text: str) -> list[str]:
    """The usernames a text mentions, in order, once each (case-insensitively), at most 20."""
    names: list[str] = []
    seen: set[str] = set()
    for match in MENTION.finditer(text or ""):
        name = match["username"].rstrip(TRAILING)
        if name and name.lower() not in seen:
            seen.add(name.lower())
            names.append(name)
            if len(names) == MAX_MENTIONS:
                break
    return names


def _may_read(user, case: Case, member_ids: set[int]) -> bool:
    """`cases.access.can_read_case` for many people at once: their queue memberships of this
    case come from one query (`member_ids`), not one per person."""
    if not roles.can_be_mentioned(user):
        return False
    if sees_all_cases(user):
        return True
    return case.assignee_id == user.pk or user.pk in member_ids


def _case_of(note: Interaction) -> Case | None:
    if note.subject_type_id != ContentType.objects.get_for_model(Case).pk:
        return None
    return Case.objects.select_related("queue").filter(pk=note.subject_id).first()


def notify_mentions(*, note_interaction: Interaction, author) -> MentionResult:
    """Notify each user an internal note @mentions who may read the note's case.

    Call it with the note just stored, inside the same transaction: the notifications commit
    with the note (and the live badges update after commit), or neither does. Safe to repeat:
    a person is told about one note once. The author mentioning themselves is ignored.
    """
    if note_interaction.kind != Kind.NOTE:
        raise ValueError("only internal notes carry @mentions")
    names = mentioned_usernames(note_interaction.body_text)
    result = MentionResult()
    if not names:
        return result
    case = _case_of(note_interaction)
    if case is None:
        result.ignored = names
        return result
    wanted = {name.lower(): name for name in names}
    users = list(
        get_user_model()
        .objects.annotate(username_lower=Lower("username"), group_names=ArrayAgg("groups__name"))
        .filter(username_lower__in=list(wanted), is_active=True)
        .exclude(pk=author.pk)
    )
    for user in users:
        # The roles in the same query (rules reads this cache), not one query per person.
        user._group_names_cache = {name for name in user.group_names if name}
    member_ids = set(
        case.queue.members.filter(pk__in=[user.pk for user in users]).values_list("pk", flat=True)
    )
    readers = [user for user in users if _may_read(user, case, member_ids)]
    told = {user.username_lower for user in readers}
    result.notified = sorted(readers, key=lambda user: names.index(wanted[user.username_lower]))
    result.ignored = [name for name in names if name.lower() not in told]
    if not readers:
        return result
    author_name = author.get_full_name() or author.get_username()
    notifications.notify(
        recipients=readers,
        verb=f"{author_name} mentioned you in a note on case #{case.pk}: {case.subject}",
        url=reverse("cases:detail", args=[case.pk]) + f"#interaction-{note_interaction.pk}",
        key=f"interaction:{note_interaction.pk}",
        actor=author,
    )
    return result
