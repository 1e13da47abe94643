"""Segment, Campaign, Touch, ContactPolicy, Override: what marketing sends, to whom, why not."""

from __future__ import annotations

from datetime import time

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q


class Segment(models.Model):
    """A saved filter over customers (campaigns.audience compiles `definition` to one query).

    `definition` is {"match": "all" | "any", "conditions": [{"field", "op", "value"}, …]}.
    """

    name = models.CharField(max_length=200, unique=True)
    description = models.CharField(max_length=500, blank=True)
    definition = models.JSONField(default=dict)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.name


class CampaignStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    SCHEDULED = "scheduled", "Scheduled"
    SENDING = "sending", "Sending"
    PAUSED = "paused", "Paused"
    DONE = "done", "Done"
    CANCELLED = "cancelled", "Cancelled"


class ScheduleMode(models.TextChoices):
    NOW = "now", "Send now"
    AT = "at", "At a set time"
    LOCAL_WINDOW = "local_window", "In each customer's local time window"


class Campaign(models.Model):
    """One message to one segment on one channel, with its schedule and lifecycle."""

    name = models.CharField(max_length=200)
    channel = models.CharField(max_length=16)  # a customers.Channel value with an outbound path
    subject = models.CharField(max_length=300, blank=True)  # email subject line
    content = models.TextField()  # placeholders: {{ customer.first_name }} …
    segment = models.ForeignKey(Segment, on_delete=models.PROTECT, related_name="campaigns")
    topics = ArrayField(models.CharField(max_length=50), default=list, blank=True)
    schedule_mode = models.CharField(
        max_length=16, choices=ScheduleMode.choices, default=ScheduleMode.AT
    )
    scheduled_at = models.DateTimeField(null=True, blank=True)  # when sending may start
    # LOCAL_WINDOW: send between these hours of the customer's own clock (their timezone).
    window_start_hour = models.PositiveSmallIntegerField(null=True, blank=True)
    window_end_hour = models.PositiveSmallIntegerField(null=True, blank=True)
    ends_at = models.DateTimeField(null=True, blank=True)  # held touches expire then
    status = models.CharField(
        max_length=12, choices=CampaignStatus.choices, default=CampaignStatus.DRAFT
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The policy version the last preflight used (shown with its figures).
    preflight_policy = models.ForeignKey(
        "ContactPolicy", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    preflight_at = models.DateTimeField(null=True, blank=True)
    materialised_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            # The beat task's poll: scheduled campaigns whose time has come.
            models.Index(
                fields=["scheduled_at"],
                name="campaign_due",
                condition=Q(status__in=["scheduled", "sending"]),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(window_start_hour__isnull=True) | Q(window_start_hour__lt=24),
                name="campaign_window_start_is_an_hour",
            ),
            models.CheckConstraint(
                condition=Q(window_end_hour__isnull=True) | Q(window_end_hour__lte=24),
                name="campaign_window_end_is_an_hour",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_live(self) -> bool:
        return self.status in (CampaignStatus.SCHEDULED, CampaignStatus.SENDING)


class TouchStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    HELD = "held", "Held"
    SUPPRESSED = "suppressed", "Suppressed"
    FAILED = "failed", "Failed"
    EXPIRED = "expired", "Expired"


class Reason(models.TextChoices):
    """Why a touch is not sent (yet). The first six hold (released when they clear); the rest
    suppress for good. Quiet hours only delay: the touch stays pending with `not_before`."""

    OPEN_COMMITMENT = "open_commitment", "Open service commitment"
    OPEN_COMPLAINT = "open_complaint", "Open complaint case"
    COOL_OFF = "cool_off", "Cool-off after a case or a broken commitment"
    AGENT_PAUSE = "agent_pause", "Marketing paused by an agent"
    FREQUENCY_CAP = "frequency_cap", "Frequency cap reached"
    QUIET_HOURS = "quiet_hours", "Customer's quiet hours"
    TOPIC_CONFLICT = "topic_conflict", "Topic conflict with an open case"
    NO_CONSENT = "no_consent", "No consent for this channel"
    NO_IDENTITY = "no_identity", "No identity on this channel"


HOLD_REASONS = (
    Reason.OPEN_COMMITMENT,
    Reason.OPEN_COMPLAINT,
    Reason.COOL_OFF,
    Reason.AGENT_PAUSE,
    Reason.FREQUENCY_CAP,
    Reason.QUIET_HOURS,
)
SUPPRESS_REASONS = (Reason.TOPIC_CONFLICT, Reason.NO_CONSENT, Reason.NO_IDENTITY)


class Touch(models.Model):
    """One campaign to one customer. Unique per (campaign, customer): a crash and a retry never
    make a second touch, and `status` only moves forward from pending/held to a final state."""

    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="touches")
    customer = models.ForeignKey("customers.Customer", on_delete=models.PROTECT, related_name="+")
    status = models.CharField(
        max_length=12, choices=TouchStatus.choices, default=TouchStatus.PENDING
    )
    reason = models.CharField(max_length=20, choices=Reason.choices, blank=True)
    reason_detail = models.CharField(max_length=300, blank=True)  # e.g. "refund due 3 Dec"
    not_before = models.DateTimeField(null=True, blank=True)  # quiet hours / local window
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    held_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    interaction_id = models.BigIntegerField(null=True, blank=True)  # its timeline entry
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "customer"], name="touch_one_per_campaign_customer"
            ),
        ]
        indexes = [
            models.Index(fields=["campaign", "status", "id"], name="touch_by_campaign_status"),
            # The frequency cap: a customer's sent marketing touches in a rolling window.
            models.Index(
                fields=["customer", "sent_at"],
                name="touch_sent_by_customer",
                condition=Q(status="sent"),
            ),
            # The agent's view: a customer's pending and held touches.
            models.Index(
                fields=["customer", "status"],
                name="touch_waiting_by_customer",
                condition=Q(status__in=["pending", "held"]),
            ),
        ]

    def __str__(self) -> str:
        return f"touch {self.pk} ({self.status})"


class CommitmentHoldScope(models.TextChoices):
    ALL = "all", "Every campaign"
    OVERLAPPING_TOPICS = (
        "overlapping_topics",
        "Only campaigns whose topics overlap the commitment's",
    )
    OFF = "off", "No hold"


class ContactPolicy(models.Model):
    """The CCO's contact policy. Versioned: each change adds a row; the highest version rules.

    Consent is not a switch here: marketing without consent is never allowed.
    """

    version = models.PositiveIntegerField(unique=True)
    commitment_hold_scope = models.CharField(
        max_length=20, choices=CommitmentHoldScope.choices, default=CommitmentHoldScope.ALL
    )
    # An open case holds the customer when its priority is one of these, or it has one of
    # these topics.
    complaint_priorities = ArrayField(models.CharField(max_length=8), default=list, blank=True)
    complaint_topics = ArrayField(models.CharField(max_length=50), default=list, blank=True)
    cool_off_days = models.PositiveSmallIntegerField(default=7)
    is_topic_conflict_on = models.BooleanField(default=True)
    frequency_cap_touches = models.PositiveSmallIntegerField(default=3)  # 0: no cap
    frequency_cap_days = models.PositiveSmallIntegerField(default=7)
    quiet_hours_start = models.TimeField(default=time(21, 0))
    quiet_hours_end = models.TimeField(default=time(8, 0))
    is_agent_pause_on = models.BooleanField(default=True)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    changed_at = models.DateTimeField(auto_now_add=True)
    change_note = models.CharField(max_length=500, blank=True)

    class Meta:
        verbose_name_plural = "contact policies"
        constraints = [
            models.CheckConstraint(
                condition=Q(frequency_cap_days__gte=1), name="policy_cap_window_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"contact policy v{self.version}"


class OverrideStatus(models.TextChoices):
    PENDING = "pending", "Waiting for the CCO"
    APPROVED = "approved", "Approved"
    REFUSED = "refused", "Refused"


class Override(models.Model):
    """A marketer's request to send one campaign to customers held for one reason; the CCO's
    decision (approve or refuse, with a written reason) is audited."""

    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="overrides")
    reason = models.CharField(max_length=20, choices=Reason.choices)
    justification = models.TextField()
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(
        max_length=10, choices=OverrideStatus.choices, default=OverrideStatus.PENDING
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "reason"],
                condition=Q(status__in=["pending", "approved"]),
                name="override_one_open_per_reason",
            ),
        ]

    def __str__(self) -> str:
        return f"override {self.pk} ({self.reason}, {self.status})"
