"""Segments: a definition of conditions over customers, validated and compiled to one SQL query.

A definition is {"match": "all" | "any", "conditions": [condition, …]}; a condition is
{"field": …, "op": …, "value": …} plus, for two fields, what it is about ("key" of an
attribute, "channel" of an interaction). `FIELDS` describes every condition for the builder.
Exclusions ("no consent", "no interaction in N days") are written as NOT EXISTS, never NOT IN:
a NULL in a subquery must not turn "not in" into "unknown" and drop everyone.
Merged customers (tombstones) and erased customers are never in a segment.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db.models import Exists, JSONField, OuterRef, Q, QuerySet, Value
from django.db.models.fields.json import DataContains, KeyTextTransform, KeyTransform
from django.db.models.lookups import Exact, IContains, In
from django.utils import timezone

from customers.models import (
    IDENTITY_CHANNELS,
    Channel,
    Consent,
    ConsentPurpose,
    Customer,
    Direction,
    Identity,
    Interaction,
    Kind,
    LifecycleStage,
)

MAX_CONDITIONS = 20
MAX_DAYS = 3650
MAX_CHOICES = 100
_ATTRIBUTE_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*$")  # no "__": ORM paths
REGIONS = ("Africa", "America", "Antarctica", "Asia", "Atlantic", "Australia", "Europe",
           "Indian", "Pacific")  # fmt: skip
# What "an interaction" means for behaviour conditions: something the customer did or received,
# not a note or a case event an agent wrote about them.
CONTACT_KINDS = (Kind.MESSAGE, Kind.PURCHASE, Kind.VISIT, Kind.CAMPAIGN_TOUCH)

FIELDS: list[dict] = [
    {"field": "attribute", "label": "Attribute", "ops": ["equals", "contains", "in"],
     "value_type": "text", "needs": "key",
     "help": "A customer attribute (plan, region, products…): equals a value, contains a "
             "value (in a list or a text), or is one of several values."},
    {"field": "lifecycle_stage", "label": "Lifecycle stage", "ops": ["in"],
     "value_type": "choices", "choices": [[v, label] for v, label in LifecycleStage.choices]},
    {"field": "consent", "label": "Consent", "ops": ["granted", "not_granted"],
     "value_type": "choice", "choices": [[v, label] for v, label in ConsentPurpose.choices]},
    {"field": "identity", "label": "Reachable on", "ops": ["has", "has_not"],
     "value_type": "choice",
     "choices": [[c.value, c.label] for c in IDENTITY_CHANNELS]},
    {"field": "timezone", "label": "Time zone", "ops": ["in"], "value_type": "text_list",
     "help": "IANA names such as Europe/London."},
    {"field": "region", "label": "Region (time zone area)", "ops": ["in"],
     "value_type": "choices", "choices": [[r, r] for r in REGIONS]},
    {"field": "purchased", "label": "Purchased", "ops": ["within_days", "not_within_days"],
     "value_type": "days"},
    {"field": "no_interaction", "label": "No interaction for", "ops": ["at_least_days"],
     "value_type": "days"},
    {"field": "interaction_on_channel", "label": "Interaction on a channel",
     "ops": ["within_days"], "value_type": "days", "needs": "channel",
     "choices": [[c.value, c.label] for c in Channel]},
]  # fmt: skip
_SPEC = {spec["field"]: spec for spec in FIELDS}


def validate_definition(definition: dict) -> dict:
    """Return the cleaned definition, or raise ValidationError with one message per bad part.

    Cleaning strips text, lowercases nothing (attribute values are compared as stored), turns
    days into ints and removes duplicate choices, so two equal filters store the same JSON.
    """
    if not isinstance(definition, dict):
        raise ValidationError("A segment definition is an object with match and conditions.")
    match = definition.get("match", "all")
    conditions = definition.get("conditions", [])
    errors: list[str] = []
    if match not in ("all", "any"):
        errors.append(f"Match must be 'all' or 'any', not {match!r}.")
    if not isinstance(conditions, list):
        raise ValidationError("Conditions must be a list.")
    if len(conditions) > MAX_CONDITIONS:
        errors.append(f"At most {MAX_CONDITIONS} conditions.")
    cleaned = []
    for number, condition in enumerate(conditions, start=1):
        try:
            cleaned.append(_clean_condition(condition))
        except ValidationError as exc:
            errors.extend(f"Condition {number}: {message}" for message in exc.messages)
    if errors:
        raise ValidationError(errors)
    return {"match": match, "conditions": cleaned}


def _clean_condition(condition) -> dict:
    if not isinstance(condition, dict):
        raise ValidationError("a condition is an object with field, op and value.")
    field = condition.get("field")
    spec = _SPEC.get(field)
    if spec is None:
        raise ValidationError(f"unknown field {field!r}.")
    label = spec["label"].lower()
    op = condition.get("op")
    if op not in spec["ops"]:
        raise ValidationError(f"{label} cannot use {op!r}; use one of {', '.join(spec['ops'])}.")
    value = condition.get("value")
    cleaned = {"field": field, "op": op}
    if field == "attribute":
        key = str(condition.get("key") or "").strip()
        if not _ATTRIBUTE_KEY.match(key) or len(key) > 50:
            raise ValidationError(
                "an attribute name is letters, digits and single underscores (e.g. plan)."
            )
        cleaned["key"] = key
        if op == "in":
            cleaned["value"] = _text_list(value, label)
        else:
            cleaned["value"] = _text(value, label)
    elif field == "interaction_on_channel":
        channel = condition.get("channel")
        if channel not in Channel.values:
            raise ValidationError(f"unknown channel {channel!r}.")
        cleaned["channel"] = channel
        cleaned["value"] = _days(value, label)
    elif spec["value_type"] == "days":
        cleaned["value"] = _days(value, label)
    elif spec["value_type"] == "choice":
        allowed = {choice for choice, _ in spec["choices"]}
        if value not in allowed:
            raise ValidationError(f"{label}: {value!r} is not one of {', '.join(sorted(allowed))}.")
        cleaned["value"] = value
    elif spec["value_type"] == "choices":
        values = _text_list(value, label)
        allowed = {choice for choice, _ in spec["choices"]}
        unknown = [v for v in values if v not in allowed]
        if unknown:
            raise ValidationError(f"{label}: unknown {', '.join(map(repr, unknown))}.")
        cleaned["value"] = values
    else:  # timezone names
        cleaned["value"] = _text_list(value, label)
    return cleaned


def _text(value, label: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValidationError(f"{label} needs a value.")
    text = str(value).strip()
    if not text or len(text) > 200:
        raise ValidationError(f"{label} needs a value of 1 to 200 characters.")
    return text


def _text_list(value, label: str) -> list[str]:
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list):
        raise ValidationError(f"{label} needs a list of values.")
    values = sorted({_text(v, label) for v in value if str(v).strip()})
    if not values:
        raise ValidationError(f"{label} needs at least one value.")
    if len(values) > MAX_CHOICES:
        raise ValidationError(f"{label}: at most {MAX_CHOICES} values.")
    return values


def _days(value, label: str) -> int:
    try:
        days = int(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{label} needs a whole number of days.") from None
    if isinstance(value, bool) or not 1 <= days <= MAX_DAYS or str(days) != str(value).strip():
        raise ValidationError(f"{label} needs a whole number of days from 1 to {MAX_DAYS}.")
    return days


def customers_in_segment(definition: dict, *, now: datetime | None = None) -> QuerySet[Customer]:
    """The live customers the definition selects, as one query (conditions become EXISTS).

    `now` anchors "in the last N days" (default: the current time). The definition is
    validated first (ValidationError for a bad one).
    """
    definition = validate_definition(definition)
    now = now or timezone.now()
    conditions = [_condition_q(c, now) for c in definition["conditions"]]
    combined = Q()
    for condition in conditions:
        combined = combined & condition if definition["match"] == "all" else combined | condition
    return Customer.objects.filter(
        combined, merged_into__isnull=True, erased_at__isnull=True
    ).order_by()


def segment_count(definition: dict, *, now: datetime | None = None) -> int:
    """How many customers the definition selects now (the builder's live count)."""
    return customers_in_segment(definition, now=now).count()


def _condition_q(condition: dict, now: datetime) -> Q:
    field, op, value = condition["field"], condition["op"], condition["value"]
    if field == "attribute":
        return _attribute_q(condition["key"], op, value)
    if field == "lifecycle_stage":
        return Q(lifecycle_stage__in=value)
    if field == "consent":
        granted = Exists(_latest_consent_granted(value))
        return Q(granted) if op == "granted" else ~Q(granted)
    if field == "identity":
        has = Exists(Identity.objects.filter(customer_id=OuterRef("pk"), channel=value))
        return Q(has) if op == "has" else ~Q(has)
    if field == "timezone":
        return Q(timezone__in=value)
    if field == "region":
        region = Q()
        for area in value:
            region |= Q(timezone__startswith=f"{area}/")
        return region
    since = now - timedelta(days=value)
    if field == "purchased":
        bought = Exists(
            Interaction.objects.filter(
                customer_id=OuterRef("pk"), kind=Kind.PURCHASE, occurred_at__gte=since
            )
        )
        return Q(bought) if op == "within_days" else ~Q(bought)
    if field == "no_interaction":
        return ~Q(
            Exists(
                Interaction.objects.filter(
                    customer_id=OuterRef("pk"), kind__in=CONTACT_KINDS, occurred_at__gte=since
                ).exclude(direction=Direction.INTERNAL)
            )
        )
    # interaction_on_channel
    return Q(
        Exists(
            Interaction.objects.filter(
                customer_id=OuterRef("pk"),
                channel=condition["channel"],
                kind__in=CONTACT_KINDS,
                occurred_at__gte=since,
            )
        )
    )


def _attribute_q(key: str, op: str, value) -> Q:
    text = KeyTextTransform(key, "attributes")
    if op == "equals":
        return Q(Exact(text, value))
    if op == "in":
        return Q(In(text, value))
    # contains: an element of a JSON list, or a piece of a text (case-insensitive).
    as_list = Value([value], output_field=JSONField())
    return Q(DataContains(KeyTransform(key, "attributes"), as_list)) | Q(IContains(text, value))


def _latest_consent_granted(purpose: str) -> QuerySet[Consent]:
    """Granted consent rows for `purpose` with no later row for the same customer and purpose:
    the latest row wins, so a withdrawal recorded after a grant removes the customer at once."""
    later = Consent.objects.filter(
        customer_id=OuterRef("customer_id"), purpose=OuterRef("purpose")
    ).filter(
        Q(recorded_at__gt=OuterRef("recorded_at"))
        | Q(recorded_at=OuterRef("recorded_at"), id__gt=OuterRef("id"))
    )
    return Consent.objects.filter(
        customer_id=OuterRef("pk"), purpose=purpose, is_granted=True
    ).filter(~Q(Exists(later)))
