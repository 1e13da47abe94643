"""The low models every app may use: the User, the append-only audit log, notifications, and
the local outbox of mail sent with no provider configured."""

from __future__ import annotations

import zoneinfo

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import models


def validate_timezone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not a known time zone (e.g. Europe/London).")


class User(AbstractUser):
    """A person who signs in. Their role is their Django group (see workbench.roles)."""

    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])

    def __str__(self) -> str:
        return self.get_full_name() or self.username


class AuditQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise TypeError("The audit log is append-only.")

    def delete(self):
        raise TypeError("The audit log is append-only.")


class AuditEntry(models.Model):
    """One thing someone did that the CCO must be able to account for.

    Append-only: the model refuses updates and deletes, and a database trigger refuses them
    too, so neither the admin nor a stray query can rewrite history. The target is named by
    type and id (not a foreign key) so an entry outlives what it is about.
    """

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        "workbench.User", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_label = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=255, blank=True)
    details = models.JSONField(default=dict, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["action", "-created_at"], name="audit_by_action_recent"),
        ]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_label} {self.action}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise TypeError("The audit log is append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("The audit log is append-only.")


class Notification(models.Model):
    """Something a user was told (an @mention in a note, for now): in the nav's unread count
    until read. `key` names what it is about (`interaction:41`), so telling the same person
    about the same thing twice stores one row; the text never copies a note's body."""

    recipient = models.ForeignKey(
        "workbench.User", on_delete=models.CASCADE, related_name="notifications"
    )
    actor = models.ForeignKey(
        "workbench.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    verb = models.CharField(max_length=300)
    url = models.CharField(max_length=500)
    key = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["recipient", "key"],
                condition=~models.Q(key=""),
                name="notification_once_per_key",
            ),
        ]
        indexes = [
            models.Index(fields=["recipient", "-id"], name="notification_newest_first"),
            models.Index(
                fields=["recipient"],
                name="notification_unread",
                condition=models.Q(read_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.recipient_id}: {self.verb}"

    @property
    def is_read(self) -> bool:
        return self.read_at is not None


class OutboxEmail(models.Model):
    """One email as it would have left, stored by the local outbox backend (workbench.mail)
    when no mail provider is configured, so the demo and the tests read what was sent."""

    to = models.TextField()  # the To addresses, comma-separated as in the header
    from_email = models.CharField(max_length=320)
    subject = models.CharField(max_length=998)  # RFC 5322's longest header line
    body = models.TextField(blank=True)
    headers = models.JSONField(default=dict, blank=True)
    message_id = models.CharField(max_length=998, blank=True)
    sent_at = models.DateTimeField()

    class Meta:
        verbose_name = "outbox email"

    def __str__(self) -> str:
        return f"{self.sent_at:%Y-%m-%d %H:%M} to {self.to}: {self.subject}"

    @property
    def in_reply_to(self) -> str:
        return self.headers.get("In-Reply-To", "") if isinstance(self.headers, dict) else ""


class ChatWidgetOrigin(models.Model):
    """A website the CCO allows to embed the live-chat widget: `https://shop.example` exactly
    (scheme, host and port; no path). The chat socket refuses any other page's Origin, except
    the pages Workbench serves itself (/chat/demo/)."""

    origin = models.CharField(max_length=300, unique=True)
    added_by = models.ForeignKey(
        "workbench.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["origin"]

    def __str__(self) -> str:
        return self.origin


class Rollup(models.Model):
    """One pre-counted cell of the console's charts: a metric's numbers for one quarter hour
    (UTC) and one dimension (a channel, a queue id, a campaign id…), written only by
    `workbench.console.rollups` (see there for the metrics).

    Quarter hours, not days: every time zone's offset is a whole number of quarter hours, so
    any viewer's local hour or day is a whole number of rows and the sums stay exact. Plain
    strings for the dimensions, no foreign keys: a low part imports no app, and a rollup
    outlives what it counted.
    """

    metric = models.CharField(max_length=32)
    bucket_at = models.DateTimeField()  # the start of a quarter hour, UTC
    dimension = models.CharField(max_length=64, blank=True)
    detail = models.CharField(max_length=64, blank=True)  # a second dimension (a status…)
    value = models.BigIntegerField(default=0)
    numerator = models.BigIntegerField(default=0)
    denominator = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["metric", "bucket_at", "dimension", "detail"], name="rollup_unique_cell"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.metric} {self.bucket_at:%Y-%m-%d %H:%M} {self.dimension} {self.detail}"


class RollupCoverage(models.Model):
    """What the rollups of one metric hold: every bucket in [covered_since, covered_until) as
    of its last refresh, and (for append-only tables) the highest row id counted, so readers
    add only the rows that arrived since."""

    metric = models.CharField(max_length=32, unique=True)
    covered_since = models.DateTimeField()
    covered_until = models.DateTimeField()
    last_id = models.BigIntegerField(default=0)
    # The lowest id among the rows made in the RECENT_DAYS before the refresh: a reader's
    # "today" rows are all at or above it (an id range instead of a scan by date).
    recent_first_id = models.BigIntegerField(default=0)
    refreshed_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.metric} [{self.covered_since}, {self.covered_until})"
