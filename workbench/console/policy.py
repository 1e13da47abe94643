"""The contact policy editor: every rule with its current value, a preview of what a change does
to the live campaigns (touches moving between send and hold), saving as a new version, and the
history of versions with who changed what."""

from __future__ import annotations

from dataclasses import dataclass

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.shortcuts import redirect, render
from django.utils import timezone
from rules.contrib.views import permission_required

from campaigns import policy as contact_policy
from campaigns.models import Campaign, CampaignStatus, ContactPolicy, Reason
from cases.models import Priority
from workbench import roles
from workbench.audit import record_audit

# The rules, in DESIGN.md's order; consent is not a switch (marketing without it never goes).
POLICY_FIELDS = (
    "commitment_hold_scope",
    "complaint_priorities",
    "complaint_topics",
    "cool_off_days",
    "is_topic_conflict_on",
    "frequency_cap_touches",
    "frequency_cap_days",
    "quiet_hours_start",
    "quiet_hours_end",
    "is_agent_pause_on",
)
LIVE_STATUSES = (CampaignStatus.SCHEDULED, CampaignStatus.SENDING)
MAX_PREVIEW_CAMPAIGNS = 25


class TopicsField(forms.CharField):
    """Comma-separated topics ↔ a list."""

    def prepare_value(self, value):
        return ", ".join(value) if isinstance(value, list | tuple) else value

    def to_python(self, value):
        text = super().to_python(value) or ""
        return sorted({t.strip().lower() for t in text.split(",") if t.strip()})


class PolicyForm(forms.ModelForm):
    complaint_priorities = forms.MultipleChoiceField(
        choices=Priority.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Open complaint hold: case priorities",
        help_text="An open case of one of these priorities holds the customer.",
    )
    complaint_topics = TopicsField(
        required=False,
        label="Open complaint hold: case topics",
        help_text="Comma-separated; an open case with one of these topics holds the customer.",
    )
    change_note = forms.CharField(
        max_length=500,
        required=True,
        label="Why this change",
        help_text="Required to save: it goes into the history and the audit log.",
        widget=forms.TextInput,
    )

    class Meta:
        model = ContactPolicy
        fields = [*POLICY_FIELDS, "change_note"]
        labels = {
            "commitment_hold_scope": "Open commitment hold",
            "cool_off_days": "Cool-off (days after a case is solved or a commitment broken)",
            "is_topic_conflict_on": (
                "Topic conflict: suppress campaigns about a product with an open case"
            ),
            "frequency_cap_touches": "Frequency cap: touches (0 = no cap)",
            "frequency_cap_days": "Frequency cap: rolling window (days)",
            "quiet_hours_start": "Quiet hours start (customer's local time)",
            "quiet_hours_end": "Quiet hours end",
            "is_agent_pause_on": "Agent pause: agents may pause marketing for a customer",
        }
        widgets = {
            "quiet_hours_start": forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
            "quiet_hours_end": forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
        }

    def __init__(self, *args, preview_only: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if preview_only:
            self.fields["change_note"].required = False
        for name, field in self.fields.items():
            if name in self.errors:
                field.widget.attrs["aria-invalid"] = "true"


def current_or_default() -> ContactPolicy:
    """The ruling policy, or the model's defaults (unsaved, version 0) before the first save."""
    return contact_policy.current_policy() or ContactPolicy(version=0)


def _value(policy: ContactPolicy, name: str):
    value = getattr(policy, name)
    if isinstance(value, list):
        return ", ".join(value) or "—"
    if hasattr(value, "strftime"):
        return value.strftime("%H:%M")
    field = ContactPolicy._meta.get_field(name)
    if field.choices:
        return dict(field.choices).get(value, value)
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


def policy_diff(before: ContactPolicy | None, after: ContactPolicy) -> list[dict]:
    """The rules whose value differs, as {field, label, before, after} (shown values)."""
    labels = PolicyForm._meta.labels
    changes = []
    for name in POLICY_FIELDS:
        new = _value(after, name)
        old = _value(before, name) if before is not None else None
        if before is None or old != new:
            label = labels.get(name) or PolicyForm.base_fields[name].label or name
            changes.append({"field": name, "label": label, "before": old, "after": new})
    return changes


@dataclass(frozen=True)
class PreviewRow:
    campaign: Campaign
    total: int
    send_now: int
    send_then: int
    counts_now: dict
    counts_then: dict

    @property
    def to_hold(self) -> int:
        """Touches that would send today but be held (or suppressed) under the proposal."""
        return max(self.send_now - self.send_then, 0)

    @property
    def to_send(self) -> int:
        return max(self.send_then - self.send_now, 0)


def _goes(counts: dict) -> int:
    """Touches that go: sent at once, or in the morning (quiet hours only delay them)."""
    return counts.get(contact_policy.SEND, 0) + counts.get(Reason.QUIET_HOURS, 0)


def preview_change(proposed: ContactPolicy, *, current: ContactPolicy) -> list[PreviewRow]:
    """For each scheduled or sending campaign, its audience split under the current and the
    proposed policy (campaigns.policy.preflight with an unsaved policy): nothing is stored."""
    now = timezone.now()
    rows = []
    live = Campaign.objects.filter(status__in=LIVE_STATUSES).order_by("scheduled_at", "pk")
    for campaign in live[:MAX_PREVIEW_CAMPAIGNS]:
        now_ = contact_policy.preflight(campaign=campaign, policy=current, now=now)
        then = contact_policy.preflight(campaign=campaign, policy=proposed, now=now)
        rows.append(
            PreviewRow(
                campaign=campaign,
                total=now_.total,
                send_now=_goes(now_.counts),
                send_then=_goes(then.counts),
                counts_now=dict(now_.counts),
                counts_then=dict(then.counts),
            )
        )
    return rows


def save_policy_version(*, actor, proposed: ContactPolicy, note: str) -> ContactPolicy:
    """Store `proposed` as the next version (the CCO only, a note required); audited with the
    diff. Never edits an old row: the history is the rows. Two saves at once: one wins, the
    other's unique version fails and is told to retry."""
    if not roles.is_cco(actor):
        raise PermissionDenied("Only the CCO changes the contact policy.")
    note = (note or "").strip()
    if not note:
        raise ValueError("A change note is required.")
    with transaction.atomic():
        before = ContactPolicy.objects.order_by("-version").first()
        top = ContactPolicy.objects.aggregate(v=Max("version"))["v"] or 0
        proposed.pk = None
        proposed.version = top + 1
        proposed.changed_by = actor
        proposed.change_note = note
        proposed.save()
        record_audit(
            actor=actor,
            action="policy.changed",
            target=proposed,
            details={
                "version": proposed.version,
                "note": note,
                "changes": [
                    {k: str(v) if v is not None else None for k, v in c.items()}
                    for c in policy_diff(before, proposed)
                ],
            },
        )
    return proposed


def history() -> list[dict]:
    """Every version, newest first, with who changed what against the version before."""
    versions = list(ContactPolicy.objects.select_related("changed_by").order_by("version"))
    out = []
    previous = None
    for version in versions:
        out.append({"policy": version, "changes": policy_diff(previous, version)})
        previous = version
    return list(reversed(out))


@permission_required("workbench.open_console", raise_exception=True)
def policy_editor(request):
    current = current_or_default()
    preview = None
    form_error = ""
    if request.method == "POST":
        is_preview = "preview" in request.POST
        form = PolicyForm(request.POST, instance=ContactPolicy(), preview_only=is_preview)
        if form.is_valid():
            proposed = form.save(commit=False)
            if is_preview:
                preview = {
                    "rows": preview_change(proposed, current=current),
                    "changes": policy_diff(current, proposed),
                }
            else:
                try:
                    saved = save_policy_version(
                        actor=request.user, proposed=proposed, note=form.cleaned_data["change_note"]
                    )
                except IntegrityError:
                    form_error = (
                        "Someone saved the policy at the same moment: review and save again."
                    )
                else:
                    messages.success(
                        request, f"Contact policy version {saved.version} is in force."
                    )
                    return redirect("console:policy")
    else:
        form = PolicyForm(instance=current, initial={"change_note": ""})
    status = 400 if request.method == "POST" and form.errors else 200
    return render(
        request,
        "workbench/console_policy.html",
        {
            "form": form,
            "current": current,
            "preview": preview,
            "form_error": form_error,
            "history": history(),
            "console_section": "policy",
        },
        status=status,
    )
