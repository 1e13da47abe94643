"""Customers from outside: the CSV import (checked at upload, run in Celery chunks) and the
profile writes it shares with the API (create, update, attach an identity).

A file is checked whole before anything is stored: size, UTF-8, a header of known columns with
at least one identity, at most MAX_ROWS rows. The task then reads it again in chunks of
CHUNK_ROWS rows, one transaction per chunk and one savepoint per row, so a rejected row is never
half-stored and a worker that dies mid-file resumes after the last committed chunk.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice

import rules
from celery import current_app
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.core.paginator import Paginator
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.utils import timezone

from customers.consent import latest_consents, record_consent
from customers.identity import live_customer, normalise_handle, resolve_customer
from customers.models import (
    IDENTITY_CHANNELS,
    Channel,
    ConsentPurpose,
    Customer,
    Direction,
    Identity,
    ImportJob,
    Kind,
    LifecycleStage,
)
from customers.timeline import record_interaction
from workbench import realtime, roles
from workbench.audit import record_audit

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_ROWS = 100_000
CHUNK_ROWS = 200
# The report lists each rejected row up to this many; the count stays exact beyond it (a file
# with more rejects than this has one systematic fault, and rewriting a huge list per chunk
# would cost more than the import).
MAX_REPORTED_REJECTIONS = 10_000
MAX_NAME_CHARS = 200
MAX_REASON_CHARS = 300
REJECTED_PER_PAGE = 100
MAX_ATTRIBUTE_CHARS = 1_000
MAX_ATTRIBUTES_JSON_CHARS = 64_000
# The task's registered name: the upload enqueues it by name, so this module needs no import of
# customers.tasks (which imports this one).
IMPORT_TASK = "customers.import_customers"
PROGRESS_EVENT = "customer.import_progress"

IDENTITY_COLUMNS = {
    "email": Channel.EMAIL,
    "phone": Channel.PHONE,
    "x": Channel.X,
    "instagram": Channel.INSTAGRAM,
    "facebook": Channel.FACEBOOK,
    "whatsapp": Channel.WHATSAPP,
}
ATTRIBUTE_PREFIX = "attr:"
CONSENT_PREFIX = "consent:"
CONSENT_VALUES = {"yes": True, "granted": True, "no": False, "withdrawn": False, "": None}
_ATTRIBUTE_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\- ]{0,63}$")


# --- who may see an import --------------------------------------------------------------------


@rules.predicate
def is_import_creator(user, job) -> bool:
    """The user started this import (job is an ImportJob or its id)."""
    if job is None:
        return False
    if isinstance(job, ImportJob):
        return job.created_by_id == user.pk
    return ImportJob.objects.filter(pk=job, created_by_id=user.pk).exists()


# Marketers see their own imports; the CCO sees everyone's.
can_see_import = roles.can_import_customers & (roles.is_cco | is_import_creator)


def visible_imports(user):
    """The import jobs this user may open, newest first."""
    jobs = ImportJob.objects.select_related("created_by").order_by("-created_at", "-id")
    if not roles.can_import_customers(user):
        return jobs.none()
    if roles.is_cco(user):
        return jobs
    return jobs.filter(created_by=user)


# --- the file, checked at upload -------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One header column: what it sets (kind) and for which channel, key or purpose."""

    name: str
    kind: str  # "name", "identity", "lifecycle_stage", "attribute", "consent"
    target: str = ""


@dataclass(frozen=True)
class CheckedFile:
    content: bytes
    columns: tuple[Column, ...]
    total_rows: int


def accepted_columns_help() -> str:
    identity = ", ".join(IDENTITY_COLUMNS)
    purposes = ", ".join(ConsentPurpose.values)
    return (
        f"name, {identity}, lifecycle_stage ({', '.join(LifecycleStage.values)}), "
        f"attr:<key> (any column starting attr: becomes an attribute), "
        f"consent:<purpose> for {purposes} (yes, no, granted, withdrawn or blank)"
    )


def check_import_file(*, upload: UploadedFile) -> CheckedFile:
    """Read an uploaded CSV whole and refuse it (ValidationError, one clear message) unless it
    is at most MAX_UPLOAD_BYTES of UTF-8 text (a BOM is fine) whose first line is a header of
    known columns naming at least one identity, followed by 1 to MAX_ROWS rows.

    Nothing is stored here: a refused file leaves no trace.
    """
    if upload.size is not None and upload.size > MAX_UPLOAD_BYTES:
        raise ValidationError(too_large_message(upload.size), code="too_large")
    content = b"".join(upload.chunks())
    if len(content) > MAX_UPLOAD_BYTES:
        raise ValidationError(too_large_message(len(content)), code="too_large")
    text = _decode(content)
    records = _records(text)
    try:
        first = next(records, None)
        if first is None:
            raise ValidationError("The file is empty.", code="empty")
        columns = parse_header(first[1])
        total = 0
        for _ in records:
            total += 1
            if total > MAX_ROWS:
                raise ValidationError(
                    f"The file has more than {MAX_ROWS:,} rows; split it into smaller files.",
                    code="too_many_rows",
                )
    except csv.Error as exc:
        raise ValidationError(f"The file is not valid CSV: {exc}.", code="csv") from None
    if total == 0:
        raise ValidationError("The file has a header row but no customer rows.", code="no_rows")
    return CheckedFile(content=content, columns=columns, total_rows=total)


def too_large_message(size: int) -> str:
    return (
        f"The file is {size / 1024 / 1024:.1f} MB; the limit is "
        f"{MAX_UPLOAD_BYTES // 1024 // 1024} MB. Split it into smaller files."
    )


def _decode(content: bytes) -> str:
    not_text = (
        "The file is not UTF-8 text. Save it as \u201cCSV UTF-8\u201d from your spreadsheet "
        "and upload it again."
    )
    if b"\x00" in content:
        raise ValidationError(not_text, code="encoding")
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError(not_text, code="encoding") from None


def _records(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line where the record starts, values) for every non-blank record of the CSV text."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    line = 1
    for values in reader:
        start, line = line, reader.line_num + 1
        if not any(value.strip() for value in values):
            continue
        yield start, values


def parse_header(values: list[str]) -> tuple[Column, ...]:
    """The header's columns; ValidationError naming unknown or repeated ones."""
    columns, unknown, seen = [], [], set()
    for raw in values:
        name = raw.strip()
        lowered = name.lower()
        column = None
        if lowered == "name":
            column = Column(name="name", kind="name")
        elif lowered == "lifecycle_stage":
            column = Column(name="lifecycle_stage", kind="lifecycle_stage")
        elif lowered in IDENTITY_COLUMNS:
            column = Column(name=lowered, kind="identity", target=IDENTITY_COLUMNS[lowered])
        elif lowered.startswith(ATTRIBUTE_PREFIX):
            key = name[len(ATTRIBUTE_PREFIX) :].strip()
            if _ATTRIBUTE_KEY.match(key):
                column = Column(name=f"attr:{key}", kind="attribute", target=key)
        elif lowered.startswith(CONSENT_PREFIX):
            purpose = lowered[len(CONSENT_PREFIX) :].strip()
            if purpose in ConsentPurpose.values:
                column = Column(name=f"consent:{purpose}", kind="consent", target=purpose)
        if column is None:
            unknown.append(name)
            continue
        if column.name in seen:
            raise ValidationError(
                f"The header row names the column \u201c{column.name}\u201d twice.",
                code="header",
            )
        seen.add(column.name)
        columns.append(column)
    if not columns:
        raise ValidationError(
            "The first line must be a header row naming the columns (for example "
            f"\u201cname,email,phone\u201d); it reads {_quoted(unknown)}.",
            code="header",
        )
    if unknown:
        raise ValidationError(
            f"The header row names unknown columns: {_quoted(unknown)}. "
            f"Accepted columns: {accepted_columns_help()}.",
            code="header",
        )
    if not any(column.kind == "identity" for column in columns):
        raise ValidationError(
            f"The header row needs at least one identity column: {', '.join(IDENTITY_COLUMNS)}.",
            code="header",
        )
    return tuple(columns)


def _quoted(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(f"\u201c{name[:60]}\u201d" for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# --- upload -----------------------------------------------------------------------------------


def start_import(*, user, upload: UploadedFile) -> ImportJob:
    """Check an uploaded CSV (see check_import_file), store it as a queued ImportJob and enqueue
    the import task after commit. PermissionDenied unless the user may import customers;
    ValidationError (nothing stored) for a file that is refused.
    """
    if not roles.can_import_customers(user):
        raise PermissionDenied("Your role may not import customers.")
    checked = check_import_file(upload=upload)
    original_name = (upload.name or "customers.csv")[:255]
    with transaction.atomic(durable=True):
        job = ImportJob(created_by=user, original_name=original_name, total_rows=checked.total_rows)
        job.file.save("customers.csv", ContentFile(checked.content), save=False)
        job.save()
        record_audit(
            actor=user,
            action="customer.import",
            target=job,
            details={"file": original_name, "rows": checked.total_rows},
        )
        job_id = job.pk
        transaction.on_commit(lambda: current_app.send_task(IMPORT_TASK, args=[job_id]))
    return job


# --- the run ----------------------------------------------------------------------------------


class RowRejected(Exception):
    """A row that cannot be stored; the message is the reason the report shows."""


@dataclass
class ParsedRow:
    line: int
    name: str = ""
    identities: list[tuple[str, str, str]] = field(default_factory=list)  # column, channel, handle
    lifecycle_stage: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    consents: dict[str, bool] = field(default_factory=dict)


def run_import(*, job_id: int) -> ImportJob | None:
    """Import a queued job's rows: upsert each customer by identity, chunk by chunk.

    Safe to run twice and to resume: a finished job returns at once, each chunk locks the job
    row and starts where the last committed chunk ended, so no row is ever applied twice.
    Progress is published to the job's live group after each chunk. An unexpected error marks
    the job failed (with the error) and is raised again for the worker's log.
    """
    job = ImportJob.objects.filter(pk=job_id).first()
    if job is None or job.status in (ImportJob.Status.DONE, ImportJob.Status.FAILED):
        return job
    try:
        if job.status == ImportJob.Status.QUEUED:
            _mark_running(job_id)
        rows = _data_rows(job)
        position, pending = -1, iter(())
        while True:
            with transaction.atomic():
                job = ImportJob.objects.select_for_update().get(pk=job_id)
                if job.status != ImportJob.Status.RUNNING:
                    return job
                if job.processed_rows != position:
                    # First chunk, or another run moved on: continue from the committed row.
                    position, pending = job.processed_rows, rows.at(job.processed_rows)
                chunk = list(islice(pending, CHUNK_ROWS))
                if not chunk:
                    _finish(job)
                    return job
                _import_chunk(job, rows.columns, chunk)
                position += len(chunk)
    except Exception as exc:
        _mark_failed(job_id, exc)
        raise


def _mark_running(job_id: int) -> None:
    with transaction.atomic():
        updated = ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.QUEUED).update(
            status=ImportJob.Status.RUNNING
        )
        if updated:
            _publish_progress(job_id)


def _mark_failed(job_id: int, exc: Exception) -> None:
    logger.exception("import %s failed", job_id)
    with transaction.atomic():
        ImportJob.objects.filter(pk=job_id).exclude(status=ImportJob.Status.DONE).update(
            status=ImportJob.Status.FAILED,
            finished_at=timezone.now(),
            error=f"The import stopped: {type(exc).__name__}: {exc}"[:2000],
        )
        _publish_progress(job_id)


def _finish(job: ImportJob) -> None:
    job.status = ImportJob.Status.DONE
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "finished_at"])
    # The customers are stored; the uploaded copy of their personal data is no longer needed.
    stored = job.file.name
    if stored:
        storage = job.file.storage
        transaction.on_commit(lambda: storage.delete(stored), robust=True)
    _publish_progress(job.pk)


class _DataRows:
    """The stored file's customer rows, re-read from any position (rows already imported)."""

    def __init__(self, text: str):
        self.text = text
        records = _records(text)
        self.columns = parse_header(next(records)[1])

    def at(self, position: int) -> Iterator[tuple[int, list[str]]]:
        records = _records(self.text)
        next(records)  # the header
        return islice(records, position, None)


def _data_rows(job: ImportJob) -> _DataRows:
    with job.file.open("rb") as stored:
        return _DataRows(stored.read().decode("utf-8-sig"))


def _import_chunk(job: ImportJob, columns: tuple[Column, ...], chunk: list) -> None:
    rejected = []
    for line, values in chunk:
        try:
            parsed = parse_row(columns, line, values)
            with transaction.atomic():  # one savepoint per row: stored whole or not at all
                is_new = import_row(parsed, job=job)
        except (RowRejected, ValidationError) as exc:
            job.rejected_count += 1
            rejected.append({"row": line, "reason": _rejection_reason(exc)})
            continue
        if is_new:
            job.created_count += 1
        else:
            job.updated_count += 1
    room = MAX_REPORTED_REJECTIONS - len(job.rejected_rows)
    job.rejected_rows = job.rejected_rows + rejected[: max(room, 0)]
    job.processed_rows += len(chunk)
    job.save(
        update_fields=[
            "processed_rows",
            "created_count",
            "updated_count",
            "rejected_count",
            "rejected_rows",
        ]
    )
    _publish_progress(job.pk)


def _rejection_reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
        reason = "; ".join(f"{key}: {' '.join(messages)}" for key, messages in exc)
    elif isinstance(exc, ValidationError):
        reason = " ".join(exc.messages)
    else:
        reason = str(exc)
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "\u2026"


def _shown(value: str, limit: int = 80) -> str:
    value = value.strip()
    return repr(value if len(value) <= limit else value[:limit] + "\u2026")


def parse_row(columns: tuple[Column, ...], line: int, values: list[str]) -> ParsedRow:
    """Check one row's values against its columns (no database); RowRejected names the column."""
    if len(values) > len(columns):
        raise RowRejected(
            f"the row has {len(values)} values but the header names {len(columns)} columns"
        )
    row = ParsedRow(line=line)
    for column, raw in zip(columns, values, strict=False):
        value = raw.strip()
        if column.kind == "name":
            if len(value) > MAX_NAME_CHARS:
                raise RowRejected(f"name: longer than {MAX_NAME_CHARS} characters")
            row.name = value
        elif column.kind == "identity" and value:
            try:
                handle = normalise_handle(column.target, value)
            except ValidationError as exc:
                raise RowRejected(f"{column.name}: {exc.messages[0]}") from None
            row.identities.append((column.name, column.target, handle))
        elif column.kind == "lifecycle_stage" and value:
            stage = _stage(value)
            if stage is None:
                raise RowRejected(
                    f"lifecycle_stage: {_shown(value)} is not one of "
                    f"{', '.join(LifecycleStage.values)}"
                )
            row.lifecycle_stage = stage
        elif column.kind == "attribute" and value:
            if len(value) > MAX_ATTRIBUTE_CHARS:
                raise RowRejected(f"{column.name}: longer than {MAX_ATTRIBUTE_CHARS} characters")
            row.attributes[column.target] = value
        elif column.kind == "consent":
            if value.lower() not in CONSENT_VALUES:
                raise RowRejected(
                    f"{column.name}: {_shown(value)} is not yes, no, granted, withdrawn or blank"
                )
            is_granted = CONSENT_VALUES[value.lower()]
            if is_granted is not None:
                row.consents[column.target] = is_granted
    if not row.identities:
        raise RowRejected(
            "the row has no identity: fill in at least one of "
            + ", ".join(c.name for c in columns if c.kind == "identity")
        )
    return row


def _stage(value: str) -> str | None:
    lowered = value.lower()
    for stage in LifecycleStage:
        if lowered in (stage.value, stage.label.lower()):
            return stage.value
    return None


def import_row(row: ParsedRow, *, job: ImportJob) -> bool:
    """Upsert one parsed row; True when it created a customer. RowRejected when one of its
    identities belongs to another customer. Runs inside the caller's savepoint.

    The customer is the owner of the first identity already known (else a new one, through
    resolve_customer, so a concurrent webhook for the same handle still makes one customer);
    the row's other identities are attached to them.
    """
    wanted = {(channel, handle) for _, channel, handle in row.identities}
    known = {
        (identity.channel, identity.handle): identity
        for identity in Identity.objects.select_related("customer").filter(
            channel__in={channel for channel, _ in wanted},
            handle__in={handle for _, handle in wanted},
        )
        if (identity.channel, identity.handle) in wanted
    }
    first_known = next((i for i in row.identities if (i[1], i[2]) in known), None)
    if first_known is not None:
        is_new = False
        customer = live_customer(known[first_known[1], first_known[2]].customer)
    else:
        _, channel, handle = row.identities[0]
        resolution = resolve_customer(channel=channel, handle=handle, display_name=row.name)
        customer, is_new = resolution.customer, resolution.is_new_customer
        known[channel, handle] = resolution.identity
    for column, channel, handle in row.identities:
        identity = known.get((channel, handle))
        if identity is None:
            try:
                add_identity(customer=customer, channel=channel, handle=handle)
            except ValidationError as exc:
                raise RowRejected(f"{column}: {exc.messages[0]}") from None
        elif live_customer(identity.customer).pk != customer.pk:
            owner = live_customer(identity.customer)
            raise RowRejected(f"{column}: {handle!r} belongs to another customer (#{owner.pk})")
    source = f"{job.original_name}, line {row.line}"
    if is_new:
        changes = {}
        if row.lifecycle_stage:
            customer.lifecycle_stage = row.lifecycle_stage
            changes["lifecycle_stage"] = row.lifecycle_stage
        if row.attributes:
            customer.attributes = {**customer.attributes, **row.attributes}
            changes["attributes"] = row.attributes
        if changes:
            customer.save(update_fields=[*changes, "updated_at"])
        record_interaction(
            customer=customer,
            channel=Channel.SYSTEM,
            kind=Kind.PROFILE,
            direction=Direction.INTERNAL,
            title="Customer created by CSV import",
            body_text=f"Imported from {source}."[:1000],
            actor=job.created_by,
        )
    else:
        update_customer(
            customer=customer,
            actor=job.created_by,
            channel=Channel.SYSTEM,
            name=row.name or None,
            lifecycle_stage=row.lifecycle_stage or None,
            attributes=row.attributes or None,
            why=f"CSV import ({source})",
        )
    if row.consents:
        current = {} if is_new else latest_consents(customer.pk)
        for purpose, is_granted in row.consents.items():
            latest = current.get(purpose)
            if latest is not None and latest.is_granted == is_granted:
                continue  # already so: a re-imported file adds no duplicate evidence
            record_consent(
                customer=customer,
                purpose=purpose,
                is_granted=is_granted,
                source=Channel.API,
                recorded_by=job.created_by,
                note=f"Imported from {source}"[:500],
            )
    return is_new


# --- live progress ----------------------------------------------------------------------------


def _publish_progress(job_id: int) -> None:
    realtime.publish(realtime.group_name("import", job_id), PROGRESS_EVENT, job_id=job_id)


def progress_context(job: ImportJob, *, viewer, page: str | int | None = None) -> dict:
    """What the status page's progress partial shows: counts, percent, the rejected rows."""
    total = job.total_rows or 0
    return {
        "job": job,
        "viewer": viewer,
        "percent": round(100 * job.processed_rows / total) if total else 0,
        "is_finished": job.status in (ImportJob.Status.DONE, ImportJob.Status.FAILED),
        "rejected_page": Paginator(job.rejected_rows, REJECTED_PER_PAGE).get_page(page),
        "is_report_cut": job.rejected_count > len(job.rejected_rows),
    }


def render_import_progress(user, *, job_id: int) -> str:
    """The progress partial of the status page, for a viewer who may see the job."""
    job = ImportJob.objects.select_related("created_by").filter(pk=job_id).first()
    if job is None or not can_see_import(user, job):
        return ""
    return render_to_string(
        "customers/import_status.html#progress", progress_context(job, viewer=user)
    )


realtime.register_group("import", can_read=can_see_import)
realtime.register_fragment(PROGRESS_EVENT, render_import_progress)


# --- profile writes shared with the API -------------------------------------------------------


def add_identity(
    *, customer: Customer, channel: str, handle: str, display_name: str = ""
) -> tuple[Identity, bool]:
    """Attach a handle to a customer; return (identity, created).

    The handle is normalised (ValidationError naming `channel` or `handle`). A handle the
    customer already has is returned as is; one that belongs to another customer is refused
    (ValidationError on `handle`): moving it would be a merge, which has its own service.
    """
    if channel not in IDENTITY_CHANNELS:
        raise ValidationError({"channel": f"unknown channel {channel!r}"})
    try:
        handle = normalise_handle(channel, handle)
    except ValidationError as exc:
        raise ValidationError({"handle": exc.messages}) from None
    for _attempt in range(2):
        existing = (
            Identity.objects.select_related("customer")
            .filter(channel=channel, handle=handle)
            .first()
        )
        if existing is not None:
            owner = live_customer(existing.customer)
            if owner.pk != customer.pk:
                raise ValidationError(
                    {"handle": f"{handle!r} belongs to another customer (#{owner.pk})"}
                )
            return existing, False
        try:
            with transaction.atomic():
                identity = Identity.objects.create(
                    customer=customer,
                    channel=channel,
                    handle=handle,
                    display_name=display_name[:200],
                )
            return identity, True
        except IntegrityError:
            continue  # stored by someone else just now: look again to see whose it is
    raise ValidationError({"handle": f"{handle!r} could not be stored; try again"})


def update_customer(
    *,
    customer: Customer,
    actor,
    channel: str = Channel.API,
    name: str | None = None,
    lifecycle_stage: str | None = None,
    attributes: dict | None = None,
    timezone_name: str | None = None,
    why: str = "",
) -> list[str]:
    """Change a customer's profile; return the fields that changed (may be none).

    `attributes` are merged into the existing ones (a key set to None is removed). A tombstone
    or an erased customer is refused (ValidationError). Any change is one "Profile change"
    entry on the timeline, naming the fields.
    """
    errors = {}
    if customer.merged_into_id is not None:
        errors["customer"] = f"customer was merged into #{customer.merged_into_id}"
    elif customer.erased_at is not None:
        errors["customer"] = "customer's data was erased"
    if name is not None and not (0 < len(name.strip()) <= MAX_NAME_CHARS):
        errors["name"] = f"name must be 1 to {MAX_NAME_CHARS} characters"
    if lifecycle_stage is not None and lifecycle_stage not in LifecycleStage.values:
        errors["lifecycle_stage"] = f"unknown lifecycle stage {lifecycle_stage!r}"
    merged_attributes = None
    if attributes is not None:
        merged_attributes = {**customer.attributes, **attributes}
        merged_attributes = {k: v for k, v in merged_attributes.items() if v is not None}
        if len(json.dumps(merged_attributes)) > MAX_ATTRIBUTES_JSON_CHARS:
            errors["attributes"] = f"attributes are larger than {MAX_ATTRIBUTES_JSON_CHARS} bytes"
    if timezone_name and not is_timezone(timezone_name):
        errors["timezone"] = f"unknown time zone {timezone_name!r}"
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        customer = Customer.objects.select_for_update().get(pk=customer.pk)
        changed = {}
        if name is not None and name.strip() != customer.display_name:
            changed["display_name"] = name.strip()
        if lifecycle_stage is not None and lifecycle_stage != customer.lifecycle_stage:
            changed["lifecycle_stage"] = lifecycle_stage
        if merged_attributes is not None:
            merged_attributes = {**customer.attributes, **attributes}
            merged_attributes = {k: v for k, v in merged_attributes.items() if v is not None}
            if merged_attributes != customer.attributes:
                changed["attributes"] = merged_attributes
        if timezone_name is not None and timezone_name != customer.timezone:
            changed["timezone"] = timezone_name
        if not changed:
            return []
        for field_name, value in changed.items():
            setattr(customer, field_name, value)
        customer.save(update_fields=[*changed, "updated_at"])
        labels = ["name" if f == "display_name" else f.replace("_", " ") for f in changed]
        record_interaction(
            customer=customer,
            channel=channel,
            kind=Kind.PROFILE,
            direction=Direction.INTERNAL,
            title=f"Profile changed: {', '.join(labels)}"[:300],
            body_text=why[:1000],
            actor=actor,
            data={"fields": labels},
        )
    return list(changed)


def is_timezone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def create_customer(
    *,
    actor,
    name: str,
    identities: list[tuple[str, str]] = (),
    lifecycle_stage: str = LifecycleStage.LEAD,
    attributes: dict | None = None,
    timezone_name: str = "",
) -> Customer:
    """Create a customer with their handles, in one transaction.

    ValidationError (keyed by field, identities as `identities.<n>.<field>`) for an unknown
    channel, a malformed handle or one that already belongs to someone: then nothing is stored.
    The customer's timeline starts with "Customer created".
    """
    errors = {}
    if not (0 < len(name.strip()) <= MAX_NAME_CHARS):
        errors["name"] = f"name must be 1 to {MAX_NAME_CHARS} characters"
    if lifecycle_stage not in LifecycleStage.values:
        errors["lifecycle_stage"] = f"unknown lifecycle stage {lifecycle_stage!r}"
    if attributes and len(json.dumps(attributes)) > MAX_ATTRIBUTES_JSON_CHARS:
        errors["attributes"] = f"attributes are larger than {MAX_ATTRIBUTES_JSON_CHARS} bytes"
    if timezone_name and not is_timezone(timezone_name):
        errors["timezone"] = f"unknown time zone {timezone_name!r}"
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        customer = Customer.objects.create(
            display_name=name.strip(),
            lifecycle_stage=lifecycle_stage,
            attributes={k: v for k, v in (attributes or {}).items() if v is not None},
            timezone=timezone_name,
        )
        for index, (channel, handle) in enumerate(identities):
            try:
                add_identity(customer=customer, channel=channel, handle=handle)
            except ValidationError as exc:
                raise ValidationError(
                    {f"identities.{index}.{key}": messages for key, messages in exc}
                ) from None
        record_interaction(
            customer=customer,
            channel=Channel.API,
            kind=Kind.PROFILE,
            direction=Direction.INTERNAL,
            title="Customer created",
            actor=actor,
        )
    return customer
