"""Editing marketing's work: saving segments, drafting campaigns, previewing their content.

Only marketers edit; a campaign is edited by its owner while it is a draft (a scheduled one is
paused or cancelled, never changed under the customers it is already going to). A segment that
a live campaign uses is frozen too: its audience must not move while touches are being sent.
Every service checks the role itself, so the page and the API refuse alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction

from campaigns.audience import customers_in_segment, validate_definition
from campaigns.models import Campaign, CampaignStatus, ScheduleMode, Segment
from workbench import roles

# The channels a campaign may go out on (each has an outbound path in workbench.connectors).
CAMPAIGN_CHANNELS = (
    ("email", "Email"),
    ("whatsapp", "WhatsApp"),
    ("facebook", "Messenger"),
    ("instagram", "Instagram"),
    ("x", "X"),
    ("sms", "SMS"),
)
MAX_TOPICS = 20
# Statuses in which a campaign's audience is being worked: its segment may not change.
LIVE_STATUSES = (CampaignStatus.SCHEDULED, CampaignStatus.SENDING, CampaignStatus.PAUSED)

# `{{ customer.first_name }}`: the only placeholders content may hold.
PLACEHOLDER = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_.]*)\s*\}\}")
PLACEHOLDERS = {
    "customer.first_name": "the first word of the customer's name",
    "customer.name": "the customer's full name",
    "customer.plan": "the customer's plan (attribute)",
    "customer.region": "the customer's region (attribute)",
}
CAMPAIGN_FIELDS = (
    "name",
    "channel",
    "subject",
    "content",
    "segment",
    "topics",
    "schedule_mode",
    "scheduled_at",
    "window_start_hour",
    "window_end_hour",
    "ends_at",
)


def _refuse_unless_marketer(actor) -> None:
    if not roles.can_edit_campaigns(actor):
        raise PermissionDenied("Only marketers edit segments and campaigns.")


# --- segments --------------------------------------------------------------------------------


def _clean_segment(*, name: str, description: str, definition) -> tuple[str, str, dict]:
    errors: dict[str, list[str]] = {}
    name = (name or "").strip()
    if not name:
        errors["name"] = ["Give the segment a name."]
    elif len(name) > 200:
        errors["name"] = ["Keep the name under 200 characters."]
    description = (description or "").strip()
    if len(description) > 500:
        errors["description"] = ["Keep the description under 500 characters."]
    try:
        definition = validate_definition(definition)
    except ValidationError as exc:
        errors["definition"] = exc.messages
    if errors:
        raise ValidationError(errors)
    return name, description, definition


def create_segment(*, name: str, definition, actor, description: str = "") -> Segment:
    """Save a new segment owned by the marketer. Raises ValidationError keyed by field (an
    unknown condition, a taken name) and stores nothing then."""
    _refuse_unless_marketer(actor)
    name, description, definition = _clean_segment(
        name=name, description=description, definition=definition
    )
    try:
        with transaction.atomic():
            return Segment.objects.create(
                name=name, description=description, definition=definition, owner=actor
            )
    except IntegrityError:
        raise ValidationError({"name": ["A segment with this name already exists."]}) from None


def update_segment(
    *, segment: Segment, name: str, definition, actor, description: str = ""
) -> Segment:
    """Change a segment's name, description or conditions. Refused while a scheduled, sending or
    paused campaign uses it: its audience was fixed when it was scheduled."""
    _refuse_unless_marketer(actor)
    name, description, definition = _clean_segment(
        name=name, description=description, definition=definition
    )
    with transaction.atomic():
        locked = Segment.objects.select_for_update().get(pk=segment.pk)
        if locked.campaigns.filter(status__in=LIVE_STATUSES).exists():
            raise ValidationError(
                "A scheduled, sending or paused campaign uses this segment; "
                "save a copy under a new name instead."
            )
        locked.name, locked.description, locked.definition = name, description, definition
        try:
            with transaction.atomic():
                locked.save(update_fields=["name", "description", "definition", "updated_at"])
        except IntegrityError:
            raise ValidationError({"name": ["A segment with this name already exists."]}) from None
    return locked


# --- campaigns -------------------------------------------------------------------------------


def _clean_campaign(values: dict) -> dict:
    """Check a draft's fields together; raise ValidationError keyed by field."""
    errors: dict[str, list[str]] = {}
    cleaned = dict(values)
    cleaned["name"] = (values.get("name") or "").strip()
    if not cleaned["name"]:
        errors["name"] = ["Give the campaign a name."]
    elif len(cleaned["name"]) > 200:
        errors["name"] = ["Keep the name under 200 characters."]
    if values.get("channel") not in dict(CAMPAIGN_CHANNELS):
        errors["channel"] = ["Choose one of: " + ", ".join(dict(CAMPAIGN_CHANNELS).values())]
    cleaned["subject"] = (values.get("subject") or "").strip()
    if len(cleaned["subject"]) > 300:
        errors["subject"] = ["Keep the subject under 300 characters."]
    content = values.get("content") or ""
    if not content.strip():
        errors["content"] = ["Write the message."]
    unknown = sorted(unknown_placeholders(content) | unknown_placeholders(cleaned["subject"]))
    if unknown:
        errors.setdefault("content", []).append(
            "Unknown placeholder: "
            + ", ".join("{{ %s }}" % name for name in unknown)  # noqa: UP031
            + ". Use "
            + ", ".join("{{ %s }}" % name for name in PLACEHOLDERS)  # noqa: UP031
            + "."
        )
    if not isinstance(values.get("segment"), Segment):
        errors["segment"] = ["Choose a saved segment."]
    topics = [str(topic).strip().lower() for topic in values.get("topics") or []]
    cleaned["topics"] = sorted({topic for topic in topics if topic})
    if len(cleaned["topics"]) > MAX_TOPICS or any(len(t) > 50 for t in cleaned["topics"]):
        errors["topics"] = [f"At most {MAX_TOPICS} topics of up to 50 characters."]
    mode = values.get("schedule_mode") or ScheduleMode.AT
    cleaned["schedule_mode"] = mode
    if mode not in ScheduleMode.values:
        errors["schedule_mode"] = ["Choose when to send."]
    start, end = values.get("window_start_hour"), values.get("window_end_hour")
    if mode == ScheduleMode.LOCAL_WINDOW:
        if start is None or end is None:
            errors["window_start_hour"] = ["Give the hours of the customer's day to send in."]
        elif not (0 <= start < 24 and 0 < end <= 24 and start < end):
            errors["window_start_hour"] = ["The window runs from an hour 0-23 to a later one."]
    else:
        cleaned["window_start_hour"] = cleaned["window_end_hour"] = None
    ends_at: datetime | None = values.get("ends_at")
    if mode == ScheduleMode.NOW:
        cleaned["scheduled_at"] = None
    if ends_at and cleaned.get("scheduled_at") and ends_at <= cleaned["scheduled_at"]:
        errors["ends_at"] = ["The campaign must end after it starts."]
    if errors:
        raise ValidationError(errors)
    return {field: cleaned.get(field) for field in CAMPAIGN_FIELDS}


def create_campaign(*, actor, **fields) -> Campaign:
    """Save a new draft owned by the marketer (fields: CAMPAIGN_FIELDS). Nothing is sent or
    evaluated yet; preflight and scheduling come later."""
    _refuse_unless_marketer(actor)
    cleaned = _clean_campaign(fields)
    with transaction.atomic():
        return Campaign.objects.create(**cleaned, owner=actor, status=CampaignStatus.DRAFT)


def update_campaign(*, campaign: Campaign, actor, **fields) -> Campaign:
    """Change a draft. Only its owner may, and only while it is a draft: the row is locked, so a
    concurrent scheduling either happens first (and this is refused) or after."""
    _refuse_unless_marketer(actor)
    cleaned = _clean_campaign(fields)
    with transaction.atomic():
        locked = Campaign.objects.select_for_update().get(pk=campaign.pk)
        if locked.owner_id != actor.pk:
            raise PermissionDenied("Only the campaign's owner edits it.")
        if locked.status != CampaignStatus.DRAFT:
            raise ValidationError(
                f"This campaign is {locked.get_status_display().lower()}: only drafts are "
                "edited. Pause or cancel it instead."
            )
        for field, value in cleaned.items():
            setattr(locked, field, value)
        # A changed draft's last preflight no longer describes it.
        locked.preflight_policy, locked.preflight_at = None, None
        locked.save(
            update_fields=[*CAMPAIGN_FIELDS, "preflight_policy", "preflight_at", "updated_at"]
        )
    return locked


def may_edit_campaign(user, campaign: Campaign) -> bool:
    """The page's question: may this user open the editor on this campaign?"""
    return (
        bool(roles.can_edit_campaigns(user))
        and campaign.owner_id == user.pk
        and campaign.status == CampaignStatus.DRAFT
    )


# --- content ---------------------------------------------------------------------------------


def unknown_placeholders(text: str) -> set[str]:
    return {name for name in PLACEHOLDER.findall(text or "") if name not in PLACEHOLDERS}


def placeholder_values(customer) -> dict[str, str]:
    name = (customer.display_name or "").strip()
    attributes = customer.attributes if isinstance(customer.attributes, dict) else {}
    return {
        "customer.first_name": name.split()[0] if name else "there",
        "customer.name": name or "there",
        "customer.plan": str(attributes.get("plan", "")),
        "customer.region": str(attributes.get("region", "")),
    }


def fill_placeholders(text: str, customer) -> str:
    """The text with each known placeholder replaced by the customer's value (plain text)."""
    values = placeholder_values(customer)
    return PLACEHOLDER.sub(lambda match: values.get(match[1], match[0]), text or "")


@dataclass(frozen=True)
class Preview:
    customer: object | None  # the sample customer, or None when the segment matches nobody
    subject: str
    body: str


def sample_customer(segment: Segment | None):
    """The first customer of the segment (lowest id), or None."""
    if segment is None:
        return None
    try:
        definition = validate_definition(segment.definition)
    except ValidationError:
        return None
    return customers_in_segment(definition).order_by("pk").first()


def render_preview(*, subject: str, content: str, segment: Segment | None) -> Preview:
    """What one customer of the segment would receive. Plain text: the template escapes it."""
    customer = sample_customer(segment)
    if customer is None:
        return Preview(customer=None, subject=subject, body=content)
    return Preview(
        customer=customer,
        subject=fill_placeholders(subject, customer),
        body=fill_placeholders(content, customer),
    )


def delete_segment(*, segment: Segment, actor) -> None:
    """Delete a segment no campaign uses (a campaign keeps its segment as history)."""
    _refuse_unless_marketer(actor)
    with transaction.atomic():
        locked = Segment.objects.select_for_update().get(pk=segment.pk)
        if locked.campaigns.exists():
            raise ValidationError("Campaigns use this segment; it stays as their history.")
        locked.delete()


def delete_draft(*, campaign: Campaign, actor) -> None:
    """Delete one of the marketer's own drafts (a scheduled campaign is cancelled instead)."""
    _refuse_unless_marketer(actor)
    with transaction.atomic():
        locked = Campaign.objects.select_for_update().get(pk=campaign.pk)
        if locked.owner_id != actor.pk:
            raise PermissionDenied("Only the campaign's owner deletes its draft.")
        if locked.status != CampaignStatus.DRAFT:
            raise ValidationError("Only a draft is deleted; cancel a scheduled campaign instead.")
        locked.delete()
