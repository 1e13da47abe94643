"""The agent workspace's pages: the case queue (with Take next) and the case view with its actions.

Views are doors: they check who may look or act, validate a form, call one service and render.
The queue list and the case header are named partials that the live fragments in
`cases/fragments.py` render with the same context functions, for the receiving user.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django import forms
from django.contrib import messages
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import F, Q
from django.http import Http404, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_POST
from rules.contrib.views import permission_required

from cases import commitments, lifecycle, macros, replies
from cases.access import (
    can_read_case,
    can_work_case,
    may_assign_to_others,
    member_queue_ids,
    sees_all_cases,
    visible_queue_ids,
)
from cases.claiming import CLAIMABLE_STATUSES, claim_next_case
from cases.models import (
    OPEN_STATUSES,
    Case,
    Commitment,
    CommitmentKind,
    Queue,
    Status,
)
from cases.queries import open_commitments_for
from customers.models import Channel
from customers.panels import panels_for
from customers.timeline import timeline_page
from workbench import presence, realtime, roles

QUEUE = "cases/queue.html"
CASE = "cases/case.html"
PAGE_SIZE = 25
# Tab counts stop here ("999+"): counting 200,000 open cases on every page load is what makes
# other helpdesks slow; nobody needs the exact figure past a thousand.
COUNT_CAP = 999
TIMELINE_SIZE = 50
REPLY, NOTE = "reply", "note"

MINE, QUEUES, ALL = "mine", "queues", "all"
TABS = ((MINE, "Mine"), (QUEUES, "My queues (unassigned)"), (ALL, "All open"))
SORTS = (("sla", "SLA due"), ("priority", "Priority"), ("age", "Age (oldest first)"))
# Keyset order per sort: (field, is_nullable, is_datetime); `id` last keeps every key unique.
SORT_KEYS = {
    "sla": (("sla_due_at", True, True), ("priority_rank", False, False), ("id", False, False)),
    "priority": (("priority_rank", False, False), ("sla_due_at", True, True), ("id", False, False)),
    "age": (("created_at", False, True), ("id", False, False)),
}


# Who may see and act is the team rule of `cases.access`; its names stay importable from here
# (workbench.connectors.chat and older callers import them from cases.views).

# --- the queue page ---------------------------------------------------------------------------


class QueueFilterForm(forms.Form):
    """The queue page's tab, sort, filters (GET) and keyset position."""

    tab = forms.ChoiceField(choices=TABS, required=False)
    sort = forms.ChoiceField(choices=SORTS, required=False)
    status = forms.ChoiceField(
        choices=[("", "Any open status")] + [(s.value, s.label) for s in OPEN_STATUSES],
        required=False,
    )
    channel = forms.ChoiceField(choices=[("", "Any channel"), *Channel.choices], required=False)
    queue = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)
    topic = forms.CharField(required=False, max_length=50)
    after = forms.CharField(required=False, max_length=120)

    def __init__(self, *args, queues: list[tuple[int, str]], sort_default: str = "sla", **kw):
        super().__init__(*args, **kw)
        self.fields["queue"].choices = [("", "Any queue"), *queues]
        self.sort_default = sort_default

    def clean_topic(self) -> str:
        # Topics are stored stripped and lower-cased (cases.lifecycle.open_case).
        return self.cleaned_data["topic"].strip().lower()

    def clean_after(self):
        value = self.cleaned_data["after"]
        if not value:
            return None
        sort = self.data.get("sort") or self.sort_default
        keys = SORT_KEYS.get(sort, SORT_KEYS["sla"])
        try:
            return decode_position(value, keys)
        except (ValueError, OverflowError, OSError):
            raise ValidationError("That is not a position in the queue.") from None


def encode_position(case: Case, keys) -> str:
    parts = []
    for field, _, is_datetime in keys:
        value = getattr(case, field)
        if value is None:
            parts.append("n")
        elif is_datetime:
            parts.append(str(int(value.timestamp() * 1_000_000)))
        else:
            parts.append(str(value))
    return "_".join(parts)


def decode_position(value: str, keys) -> tuple:
    parts = value.split("_")
    if len(parts) != len(keys):
        raise ValueError("wrong number of keys")
    values = []
    for part, (_, is_nullable, is_datetime) in zip(parts, keys, strict=True):
        if part == "n" and is_nullable:
            values.append(None)
        elif is_datetime:
            values.append(datetime.fromtimestamp(int(part) / 1_000_000, tz=UTC))
        else:
            number = int(part)
            if not 0 <= number < 2**63:
                raise ValueError("out of range")
            values.append(number)
    return tuple(values)


def after_position(keys, values) -> Q:
    """Rows strictly after `values` in the order of `keys` (ascending, NULLs last)."""
    (field, is_nullable, _), *rest = keys
    value, *rest_values = values
    if not rest:
        return Q(**{f"{field}__gt": value})
    deeper = after_position(rest, rest_values)
    if value is None:
        return Q(**{f"{field}__isnull": True}) & deeper
    later = Q(**{f"{field}__gt": value}) | (Q(**{field: value}) & deeper)
    if is_nullable:
        later |= Q(**{f"{field}__isnull": True})
    return later


def order_by(keys) -> list:
    return [F(field).asc(nulls_last=True) if nullable else field for field, nullable, _ in keys]


def tab_scopes(viewer) -> dict[str, Q]:
    """What each tab the viewer may open lists: the only place the queue's visibility lives."""
    scopes = {
        MINE: Q(assignee=viewer, status__in=OPEN_STATUSES),
        QUEUES: Q(
            queue_id__in=member_queue_ids(viewer),
            assignee__isnull=True,
            status__in=CLAIMABLE_STATUSES,
        ),
    }
    if sees_all_cases(viewer):
        scopes[ALL] = Q(status__in=OPEN_STATUSES)
    elif roles.is_supervisor(viewer):
        # A supervisor oversees their team: every open case of the queues they belong to.
        scopes[ALL] = Q(status__in=OPEN_STATUSES, queue_id__in=member_queue_ids(viewer))
    return scopes


def default_tab(viewer) -> str:
    return MINE if roles.can_work_cases(viewer) else ALL


def queue_context(viewer, params: QueryDict, *, is_live: bool = False) -> dict:
    """Everything the queue list shows for one viewer and query; raises PermissionDenied for a
    tab the viewer may not open. A constant number of queries, whatever the number of cases."""
    queues = list(Queue.objects.order_by("name").values_list("id", "name"))
    # The queue filter offers the queues whose cases the viewer reads: the CCO every one.
    if (visible := visible_queue_ids(viewer)) is not None:
        visible = set(visible)
        choices = [(pk, name) for pk, name in queues if pk in visible]
    else:
        choices = queues
    form = QueueFilterForm(params, queues=choices)
    scopes = tab_scopes(viewer)
    context = {
        "viewer": viewer,
        "form": form,
        "now": timezone.now(),
        "rows": [],
        "next_url": None,
        "is_live": is_live,
        "is_default_view": not params,
        "list_url": reverse("cases:queue") + (f"?{params.urlencode()}" if params else ""),
        "can_take_next": bool(roles.can_work_cases(viewer)),
        "has_queues": bool(queues),
        "page_size": PAGE_SIZE,
    }
    if not form.is_valid():
        context["tabs"] = _tabs(viewer, scopes, MINE, QueryDict())
        return context
    data = form.cleaned_data
    tab = data["tab"] or default_tab(viewer)
    if tab not in scopes:
        raise PermissionDenied("Only supervisors (of their queues) and the CCO see all open cases.")
    sort = data["sort"] or "sla"
    keys = SORT_KEYS[sort]
    rows = Case.objects.filter(scopes[tab])
    if data["status"]:
        rows = rows.filter(status=data["status"])
    if data["channel"]:
        rows = rows.filter(channel=data["channel"])
    if data["queue"]:
        rows = rows.filter(queue_id=data["queue"])
    if data["topic"]:
        rows = rows.filter(topics__contains=[data["topic"]])
    if data["after"] is not None:
        rows = rows.filter(after_position(keys, data["after"]))
    rows = list(
        rows.select_related("customer", "queue", "assignee")
        .defer("customer__name_search", "customer__attributes")
        .order_by(*order_by(keys))[: PAGE_SIZE + 1]
    )
    if len(rows) > PAGE_SIZE:
        rows = rows[:PAGE_SIZE]
        query = params.copy()
        query["after"] = encode_position(rows[-1], keys)
        context["next_url"] = f"{reverse('cases:queue')}?{query.urlencode()}"
    kept = params.copy()
    kept.pop("after", None)
    context.update(
        {
            "rows": rows,
            "tab": tab,
            "sort": sort,
            "tabs": _tabs(viewer, scopes, tab, kept),
            "is_filtered": bool(
                data["status"] or data["channel"] or data["queue"] or data["topic"]
            ),
            "is_later_page": data["after"] is not None,
            "first_url": reverse("cases:queue") + (f"?{kept.urlencode()}" if kept else ""),
        }
    )
    return context


def _tabs(viewer, scopes: dict[str, Q], current: str, params: QueryDict) -> list[dict]:
    """The tabs with their counts (capped: each is one LIMITed index scan, never a full count)."""
    tabs = []
    for value, label in TABS:
        if value not in scopes:
            continue
        count = Case.objects.filter(scopes[value]).values("id")[: COUNT_CAP + 1].count()
        query = params.copy()
        query["tab"] = value
        query.pop("after", None)
        tabs.append(
            {
                "value": value,
                "label": label,
                "count": f"{COUNT_CAP}+" if count > COUNT_CAP else str(count),
                "url": f"{reverse('cases:queue')}?{query.urlencode()}",
                "is_current": value == current,
            }
        )
    return tabs


def queue_groups(viewer) -> list[str]:
    """The live groups of the queue page: the viewer's queues (every queue for the CCO)."""
    if sees_all_cases(viewer):
        ids = Queue.objects.order_by("id").values_list("id", flat=True)
    else:
        ids = member_queue_ids(viewer)
    return [realtime.group_name("queue", pk) for pk in ids]


@permission_required("cases.view_queue", raise_exception=True)
@require_GET
def queue(request):
    """The case queue: tabs with counts, filters, 25 rows by keyset. htmx gets the list alone."""
    context = queue_context(request.user, request.GET)
    status = 400 if context["form"].errors else 200
    is_fragment = request.htmx and not request.htmx.history_restore_request
    if is_fragment:
        response = render(request, f"{QUEUE}#queue-list", context, status=status)
    else:
        context["realtime_groups"] = queue_groups(request.user)
        response = render(request, QUEUE, context, status=status)
    patch_vary_headers(response, ("HX-Request",))
    return response


@permission_required("cases.view_queue", raise_exception=True)
@require_POST
def take_next(request):
    """Claim the most urgent unassigned case of my queues and open it."""
    if not roles.can_work_cases(request.user):
        raise PermissionDenied("Only service agents and supervisors take cases.")
    case = claim_next_case(agent=request.user)
    if case is None:
        messages.info(request, "Nothing waiting in your queues.")
        return redirect("cases:queue")
    return redirect("cases:detail", case.pk)


# --- the case view ----------------------------------------------------------------------------


class StatusForm(forms.Form):
    status = forms.ChoiceField(choices=Status.choices)

    def __init__(self, *args, case: Case, **kwargs):
        super().__init__(*args, **kwargs)
        allowed = lifecycle.TRANSITIONS[case.status]
        self.fields["status"].choices = [(s.value, s.label) for s in Status if s in allowed]


class AssignForm(forms.Form):
    assignee = forms.ModelChoiceField(queryset=None, label="Assign to", empty_label=None)

    def __init__(self, *args, case: Case, **kwargs):
        super().__init__(*args, **kwargs)
        # The people who work the case's queue: its agent and supervisor members.
        self.fields["assignee"].queryset = (
            case.queue.members.filter(
                groups__name__in=(roles.AGENT, roles.SUPERVISOR), is_active=True
            )
            .distinct()
            .order_by("pk")
        )
        self.fields["assignee"].label_from_instance = lambda u: u.get_full_name() or u.username


class ComposerForm(forms.Form):
    """The composer: a reply to the customer on one of their channels, or an internal note.

    "Send and set pending" is the submit button named set_status; "Send anyway" after a
    collision warning posts confirm_collision=1. seen_interaction_id is the newest timeline
    entry the page showed, so a reply that crossed someone else's is caught.
    """

    mode = forms.ChoiceField(
        choices=((REPLY, "Reply to the customer"), (NOTE, "Internal note")),
        error_messages={"required": "Choose a reply to the customer or an internal note."},
    )
    # Checked in clean() against the customer's channels, and only for a reply: a note has none.
    channel = forms.CharField(label="Reply on", required=False, max_length=16)
    body = forms.CharField(
        label="Message",
        max_length=replies.REPLY_MAX_CHARS,
        widget=forms.Textarea(attrs={"rows": 6}),
        error_messages={"required": "Write something before sending."},
    )
    seen_interaction_id = forms.IntegerField(
        required=False, min_value=0, max_value=2**63 - 1, widget=forms.HiddenInput
    )
    set_status = forms.ChoiceField(choices=[("", "Keep"), *Status.choices], required=False)
    confirm_collision = forms.BooleanField(required=False)

    def __init__(self, *args, channels: list[tuple], **kwargs):
        kwargs.setdefault("auto_id", "composer-%s")
        super().__init__(*args, **kwargs)
        self.channel_choices = [
            (value, f"{label} ({', '.join(handles)})") for value, label, handles in channels
        ]

    def clean(self):
        data = super().clean()
        mode = data.get("mode")
        channel = data.get("channel")
        if mode == REPLY and "channel" not in self.errors:
            if not self.channel_choices:
                self.add_error(
                    "channel",
                    "The customer has no handle on any channel to reply to: add one on the "
                    "customer page, or write an internal note.",
                )
            elif not channel:
                self.add_error("channel", "Choose the channel to reply on.")
            elif channel not in Channel.values:
                self.add_error("channel", f"{channel!r} is not a channel.")
            # A channel the customer has no handle on is the service's to refuse, by name.
        body = data.get("body") or ""
        if mode == NOTE and len(body) > replies.NOTE_MAX_CHARS:
            self.add_error("body", f"Keep a note under {replies.NOTE_MAX_CHARS:,} characters.")
        data["set_status"] = data.get("set_status") or None
        return data


class CommitmentForm(forms.Form):
    kind = forms.ChoiceField(choices=CommitmentKind.choices)
    text = forms.CharField(
        label="What was promised", max_length=1000, widget=forms.Textarea(attrs={"rows": 2})
    )
    due_at = forms.DateTimeField(
        label="Due", widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )
    topics = forms.CharField(
        required=False, max_length=300, help_text="Comma-separated, e.g. billing, router"
    )

    def clean_due_at(self):
        # The typed time reads on the agent's clock: AccessMiddleware activated their zone.
        value = self.cleaned_data["due_at"]
        if value <= timezone.now():
            raise ValidationError("The due time must be in the future.")
        return value

    def clean_topics(self) -> list[str]:
        return [t.strip() for t in self.cleaned_data["topics"].split(",") if t.strip()]


def _get_case(request, pk: int) -> Case:
    case = get_object_or_404(
        Case.objects.select_related("customer", "queue", "assignee").defer("customer__name_search"),
        pk=pk,
    )
    if not can_read_case(request.user, case):
        raise PermissionDenied("This case is not in your queues or assigned to you.")
    return case


def _get_workable_case(request, pk: int) -> Case:
    case = _get_case(request, pk)
    if not can_work_case(request.user, case):
        raise PermissionDenied("Your role reads cases but does not work on them.")
    return case


def header_context(viewer, case: Case) -> dict:
    """The case header: status, priority, queue, assignee, SLA due times, topics."""
    now = timezone.now()
    return {
        "case": case,
        "viewer": viewer,
        "now": now,
        "is_overdue": case.sla_due_at is not None and case.sla_due_at < now,
        "is_paused": case.status == Status.PENDING,
    }


def case_context(viewer, case: Case, **forms_given) -> dict:
    """Everything the case view shows; a constant number of queries whatever the timeline."""
    customer = case.customer
    may_work = can_work_case(viewer, case)
    context = header_context(viewer, case)
    case_type = ContentType.objects.get_for_model(Case)
    commitment_type = ContentType.objects.get_for_model(Commitment)
    own_commitment_ids = set(case.commitments.values_list("id", flat=True))
    page = timeline_page(customer.pk, size=TIMELINE_SIZE)
    entries = [
        (
            entry,
            (entry.subject_type_id == case_type.pk and entry.subject_id == case.pk)
            or (
                entry.subject_type_id == commitment_type.pk
                and entry.subject_id in own_commitment_ids
            ),
        )
        for entry in page.entries
    ]
    context.update(
        {
            "customer": customer,
            "identities": list(customer.identities.order_by("channel", "handle")),
            "open_commitments": list(open_commitments_for([customer.pk]).select_related("case")),
            "entries": entries,
            "has_older": page.next_cursor is not None,
            "can_read_private": roles.can_read_private_notes(viewer),
            "may_work": may_work,
            "panels": panels_for(viewer, customer.pk),
            "realtime_groups": [
                realtime.group_name("case", case.pk),
                realtime.group_name("customer", customer.pk),
            ],
        }
    )
    if may_work:
        is_supervisor = bool(roles.is_supervisor(viewer))
        may_assign = may_assign_to_others(viewer, case)
        context.update(
            {
                "status_form": forms_given.get("status_form") or StatusForm(case=case),
                **composer_context(case, page.entries, context["identities"], forms_given),
                "commitment_form": forms_given.get("commitment_form") or CommitmentForm(),
                "is_supervisor": is_supervisor,
                "assign_form": (forms_given.get("assign_form") or _assign_form(case))
                if may_assign
                else None,
                "assign_errors": forms_given.get("assign_errors", []),
                "case_errors": forms_given.get("case_errors", []),
            }
        )
    return context


def composer_context(case: Case, entries, identities, forms_given: dict) -> dict:
    """The composer's form (fresh, or as posted with its errors) and what it offers."""
    channels = replies.reply_channels(case.customer, identities)
    form = forms_given.get("composer_form")
    if form is None:
        default_channel = replies.default_reply_channel(case, [c for c, _, _ in channels])
        form = ComposerForm(
            channels=channels,
            initial={
                "mode": REPLY if channels and case.status != Status.CLOSED else NOTE,
                "channel": default_channel,
                "seen_interaction_id": max((entry.pk for entry in entries), default=0),
                # The no-JS macro picker (?macro=<id>) comes back with the composer filled.
                "body": forms_given.get("composer_body"),
            },
        )
    collision = forms_given.get("collision")
    return {
        "composer_form": form,
        "macros": list(macros.active_macros().only("id", "name")),
        "composer_mode": form["mode"].value() or REPLY,
        "reply_channels": channels,
        "can_set_pending": Status.PENDING in lifecycle.TRANSITIONS[case.status],
        "collision": collision,
        "collision_set_status": (form.cleaned_data.get("set_status") or "")
        if collision is not None
        else "",
    }


def _assign_form(case: Case, data=None) -> AssignForm:
    return AssignForm(data, case=case, initial={"assignee": case.assignee_id})


@permission_required("cases.view_queue", raise_exception=True)
@require_GET
def case_detail(request, pk: int):
    case = _get_case(request, pk)
    given = {}
    macro = macros.active_macro(request.GET.get("macro"))
    if macro is not None and can_work_case(request.user, case):
        given["composer_body"] = macros.render_macro(macro=macro, case=case, agent=request.user)
    return render(request, CASE, case_context(request.user, case, **given))


def presence_html(viewer, case_pk: int) -> str:
    """ "Also here: Priya (typing…)" as an out-of-band swap: everyone on the case but the viewer,
    empty when alone. The caller has checked that the viewer may read the case."""
    others = presence.people_here(group=realtime.group_name("case", case_pk), viewer_id=viewer.pk)
    return render_to_string(
        "cases/_presence.html#case-presence", {"others": others, "is_live": True}
    )


@permission_required("cases.view_queue", raise_exception=True)
@require_GET
def case_header(request, pk: int):
    """The header, for the page's refetch after a reconnect or a missed event (`wb:resync`).

    Presence rides along out of band: a presence event that arrived after a gap in the case
    group's sequence was dropped by the page, and only this refetch puts it right."""
    case = _get_case(request, pk)
    response = render(request, f"{CASE}#case-header", header_context(request.user, case))
    response.content += presence_html(request.user, case.pk).encode()
    return response


def _back(case: Case, anchor: str = ""):
    return redirect(reverse("cases:detail", args=[case.pk]) + (f"#{anchor}" if anchor else ""))


def _invalid(request, case: Case, *, status: int = 400, **forms_given):
    return render(request, CASE, case_context(request.user, case, **forms_given), status=status)


def _messages_of(exc: ValidationError) -> list[str]:
    if hasattr(exc, "message_dict"):
        return [m for errors in exc.message_dict.values() for m in errors]
    return list(exc.messages)


@permission_required("cases.view_queue", raise_exception=True)
@require_POST
def case_status(request, pk: int):
    case = _get_workable_case(request, pk)
    form = StatusForm(request.POST, case=case)
    if form.is_valid():
        try:
            lifecycle.change_status(
                case=case, status=form.cleaned_data["status"], actor=request.user
            )
        except ValidationError as exc:
            form.add_error("status", _messages_of(exc))
        else:
            messages.success(request, f"Status set to {form.cleaned_data['status']}.")
            return _back(case)
    return _invalid(request, case, status_form=form)


@permission_required("cases.view_queue", raise_exception=True)
@require_POST
def case_assign(request, pk: int):
    """ "Assign to me" (assignee=me) for agents of the queue; any member for the queue's
    supervisors (a supervisor outside the queue, on a case assigned to them, only takes it)."""
    case = _get_workable_case(request, pk)
    if request.POST.get("assignee") == "me":
        assignee = request.user
        form = None
    else:
        if not roles.is_supervisor(request.user):
            raise PermissionDenied("Only a supervisor assigns cases to others.")
        if not may_assign_to_others(request.user, case):
            raise PermissionDenied("A supervisor assigns only the cases of their own queues.")
        form = _assign_form(case, request.POST)
        if not form.is_valid():
            return _invalid(request, case, assign_form=form)
        assignee = form.cleaned_data["assignee"]
    try:
        lifecycle.assign_case(case=case, assignee=assignee, actor=request.user)
    except ValidationError as exc:
        if form is not None:
            form.add_error("assignee", _messages_of(exc))
            return _invalid(request, case, assign_form=form)
        return _invalid(request, case, assign_errors=_messages_of(exc))
    messages.success(request, f"Assigned to {assignee.get_full_name() or assignee}.")
    return _back(case)


@permission_required("cases.view_queue", raise_exception=True)
@require_POST
def case_compose(request, pk: int):
    """The composer's one door: send a reply (and maybe set pending) or add an internal note."""
    case = _get_workable_case(request, pk)
    return _compose(request, case, request.POST)


@permission_required("cases.view_queue", raise_exception=True)
@require_POST
def case_note(request, pk: int):
    """An internal note alone (the composer in note mode): private to service and the CCO."""
    case = _get_workable_case(request, pk)
    data = request.POST.copy()
    data["mode"] = NOTE
    return _compose(request, case, data)


def _compose(request, case: Case, data: QueryDict):
    form = ComposerForm(data, channels=replies.reply_channels(case.customer))
    if not form.is_valid():
        return _invalid(request, case, composer_form=form)
    values = form.cleaned_data
    try:
        if values["mode"] == NOTE:
            replies.add_note(
                case=case, author=request.user, body=values["body"], set_status=values["set_status"]
            )
            done = "Note added."
        else:
            reply = replies.send_reply(
                case=case,
                author=request.user,
                channel=values["channel"],
                body=values["body"],
                set_status=values["set_status"],
                seen_interaction_id=values["seen_interaction_id"],
                confirm_collision=values["confirm_collision"],
            )
            done = f"Reply queued to {reply.data['to']}."
    except replies.CollisionError as exc:
        return _invalid(request, case, status=409, composer_form=form, collision=exc)
    except ValidationError as exc:
        for field, errors in _errors_by_field(exc).items():
            field = {"status": "set_status"}.get(field, field)
            form.add_error(field if field in form.fields else None, errors)
        return _invalid(request, case, composer_form=form)
    if values["set_status"]:
        done += f" The case is {values['set_status']} now."
    messages.success(request, done)
    return _back(case, "timeline")


def _errors_by_field(exc: ValidationError) -> dict[str, list[str]]:
    if hasattr(exc, "error_dict"):
        return exc.message_dict
    return {"__all__": list(exc.messages)}


@permission_required("cases.view_queue", raise_exception=True)
@require_POST
def case_commitment(request, pk: int):
    case = _get_workable_case(request, pk)
    form = CommitmentForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            commitments.record_commitment(
                case=case,
                kind=data["kind"],
                text=data["text"],
                due_at=data["due_at"],
                topics=data["topics"],
                actor=request.user,
            )
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        else:
            messages.success(request, "Commitment recorded: marketing holds for this customer.")
            return _back(case, "commitments")
    return _invalid(request, case, commitment_form=form)


@permission_required("cases.view_queue", raise_exception=True)
@require_POST
def commitment_resolve(request, pk: int, commitment_pk: int, outcome: str):
    """Keep or break an open commitment of this customer (shown on this case)."""
    case = _get_workable_case(request, pk)
    commitment = get_object_or_404(
        Commitment.objects.select_related("case__queue"), pk=commitment_pk, customer=case.customer
    )
    service = {"keep": commitments.keep_commitment, "break": commitments.break_commitment}.get(
        outcome
    )
    if service is None:
        raise Http404("no such outcome")
    try:
        service(commitment=commitment, actor=request.user)
    except ValidationError as exc:
        return _invalid(request, case, case_errors=_messages_of(exc))
    verb = "kept" if outcome == "keep" else "broken"
    messages.success(request, f"Commitment marked {verb}.")
    return _back(case, "commitments")


@permission_required("cases.view_queue", raise_exception=True)
@require_POST
def case_pause_marketing(request, pk: int):
    case = _get_workable_case(request, pk)
    try:
        commitments.pause_marketing(case=case, actor=request.user)
    except ValidationError as exc:
        return _invalid(request, case, case_errors=_messages_of(exc))
    messages.success(request, "Marketing is paused for this customer until the case is solved.")
    return _back(case)
