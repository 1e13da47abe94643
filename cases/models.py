"""Queue, calendar, SlaPolicy, Case, Commitment: where service work waits and what it promised."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower


class BusinessCalendar(models.Model):
    """Working hours in a time zone, with holidays: the clock SLA targets run on."""

    name = models.CharField(max_length=100, unique=True)
    timezone = models.CharField(max_length=64, default="UTC")
    # {"mon": [["09:00", "17:00"]], "tue": [...], ...}; a missing day is closed.
    working_hours = models.JSONField(default=dict)
    holidays = ArrayField(models.DateField(), default=list, blank=True)

    def __str__(self) -> str:
        return self.name


class AssignmentMode(models.TextChoices):
    MANUAL = "manual", "Manual"
    ROUND_ROBIN = "round_robin", "Round-robin"
    LEAST_LOADED = "least_loaded", "Least loaded"


class Queue(models.Model):
    """Where cases wait. Agents are members of queues; supervisors lead them."""

    name = models.CharField(max_length=100, unique=True)
    calendar = models.ForeignKey(BusinessCalendar, on_delete=models.PROTECT, related_name="queues")
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="queues", blank=True)
    assignment_mode = models.CharField(
        max_length=16, choices=AssignmentMode.choices, default=AssignmentMode.MANUAL
    )
    agent_capacity = models.PositiveSmallIntegerField(default=10)
    # The queue a channel's new cases go to when no routing rule says otherwise.
    default_for_channels = ArrayField(models.CharField(max_length=16), default=list, blank=True)
    auto_close_days = models.PositiveSmallIntegerField(default=7)

    def __str__(self) -> str:
        return self.name


class Priority(models.TextChoices):
    LOW = "low", "Low"
    NORMAL = "normal", "Normal"
    HIGH = "high", "High"
    URGENT = "urgent", "Urgent"


PRIORITY_RANK = {"urgent": 0, "high": 1, "normal": 2, "low": 3}


class SlaPolicy(models.Model):
    """Targets for one queue and priority, in business minutes of the queue's calendar."""

    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, related_name="sla_policies")
    priority = models.CharField(max_length=8, choices=Priority.choices)
    first_response_minutes = models.PositiveIntegerField()
    resolution_minutes = models.PositiveIntegerField()
    # A commitment past due is counted as broken after this grace.
    commitment_grace_hours = models.PositiveIntegerField(default=24)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["queue", "priority"], name="sla_one_per_priority"),
        ]
        verbose_name_plural = "SLA policies"

    def __str__(self) -> str:
        return f"{self.queue} / {self.priority}"


class Status(models.TextChoices):
    NEW = "new", "New"
    OPEN = "open", "Open"
    PENDING = "pending", "Pending"
    SOLVED = "solved", "Solved"
    CLOSED = "closed", "Closed"


OPEN_STATUSES = (Status.NEW, Status.OPEN, Status.PENDING)


class Case(models.Model):
    """A unit of service work for one customer."""

    customer = models.ForeignKey("customers.Customer", on_delete=models.PROTECT, related_name="+")
    subject = models.CharField(max_length=300)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.NEW)
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    # Denormalised rank so "most urgent first" is one index (urgent=0 … low=3).
    priority_rank = models.PositiveSmallIntegerField(default=2)
    queue = models.ForeignKey(Queue, on_delete=models.PROTECT, related_name="cases")
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    channel = models.CharField(max_length=16)
    thread_key = models.CharField(max_length=255, blank=True)
    topics = ArrayField(models.CharField(max_length=50), default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    first_responded_at = models.DateTimeField(null=True, blank=True)
    solved_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    first_response_due_at = models.DateTimeField(null=True, blank=True)
    resolution_due_at = models.DateTimeField(null=True, blank=True)
    # Business minutes used while open, banked when the clock pauses (pending).
    sla_minutes_used = models.PositiveIntegerField(default=0)
    sla_clock_started_at = models.DateTimeField(null=True, blank=True)
    # The soonest SLA deadline still running: what the queue sorts by (NULL while paused).
    sla_due_at = models.DateTimeField(null=True, blank=True)
    first_response_breached_at = models.DateTimeField(null=True, blank=True)
    resolution_breached_at = models.DateTimeField(null=True, blank=True)
    pauses_marketing = models.BooleanField(default=False)
    merged_into = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="merged_from"
    )

    class Meta:
        indexes = [
            # The queue page and take-next: open cases of a queue, most urgent SLA first.
            models.Index(
                fields=["queue", "sla_due_at", "priority_rank", "id"],
                name="case_queue_by_sla",
                condition=Q(status__in=["new", "open", "pending"]),
            ),
            models.Index(
                fields=["queue", "priority_rank", "sla_due_at", "id"],
                name="case_unassigned_next",
                condition=Q(status__in=["new", "open"], assignee__isnull=True),
            ),
            models.Index(
                fields=["assignee", "sla_due_at", "id"],
                name="case_mine_by_sla",
                condition=Q(status__in=["new", "open", "pending"]),
            ),
            models.Index(fields=["customer", "status"], name="case_by_customer"),
            models.Index(fields=["thread_key"], name="case_by_thread"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.subject}"

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


class CommitmentKind(models.TextChoices):
    REFUND = "refund", "Refund"
    CALLBACK = "callback", "Callback"
    REPLACEMENT = "replacement", "Replacement"
    FIX = "fix", "Fix"
    CREDIT = "credit", "Credit"
    OTHER = "other", "Other"


class CommitmentStatus(models.TextChoices):
    OPEN = "open", "Open"
    KEPT = "kept", "Kept"
    BROKEN = "broken", "Broken"
    WITHDRAWN = "withdrawn", "Withdrawn"


class Commitment(models.Model):
    """A promise made to the customer on a case."""

    case = models.ForeignKey(Case, on_delete=models.PROTECT, related_name="commitments")
    customer = models.ForeignKey("customers.Customer", on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=16, choices=CommitmentKind.choices)
    text = models.CharField(max_length=1000)
    due_at = models.DateTimeField()
    status = models.CharField(
        max_length=10, choices=CommitmentStatus.choices, default=CommitmentStatus.OPEN
    )
    topics = ArrayField(models.CharField(max_length=50), default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    overdue_flagged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["customer", "due_at"],
                name="commitment_open_by_customer",
                condition=Q(status="open"),
            ),
            models.Index(
                fields=["due_at"], name="commitment_open_by_due", condition=Q(status="open")
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.text[:60]}"


class Macro(models.Model):
    """A canned response: a named text with placeholders (`{{ customer.first_name }}`) that
    cases.macros fills from the case and the agent. Deactivated, never deleted: old replies
    were written with it."""

    name = models.CharField(max_length=100)
    body = models.TextField()
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # "Refund" and "refund" would be the same entry in the picker.
            models.UniqueConstraint(
                Lower("name"),
                name="macro_unique_name",
                violation_error_message="A macro with this name already exists.",
            ),
        ]
        indexes = [
            # The composer's picker: active macros by name.
            models.Index(fields=["name"], name="macro_active_by_name", condition=Q(is_active=True)),
        ]

    def __str__(self) -> str:
        return self.name
