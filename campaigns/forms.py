"""Marketing's forms: the segment builder's rows, the campaign draft, an override request.

Forms parse and check what a browser sends; the services in `campaigns.editing` and
`campaigns.overrides` check it again (the API goes straight to them).
"""

from __future__ import annotations

from django import forms

from campaigns.audience import FIELDS
from campaigns.editing import CAMPAIGN_CHANNELS, PLACEHOLDERS
from campaigns.models import Reason, ScheduleMode, Segment
from campaigns.overrides import OVERRIDABLE_REASONS

MATCH_CHOICES = (("all", "all of these conditions"), ("any", "any of these conditions"))
MAX_CONDITIONS = 20


OP_LABELS = {
    "equals": "equals",
    "contains": "contains",
    "in": "is one of",
    "granted": "is granted for",
    "not_granted": "is not granted for",
    "has": "has a handle on",
    "has_not": "has no handle on",
    "within_days": "in the last (days)",
    "not_within_days": "not in the last (days)",
    "at_least_days": "at least (days)",
}
MULTI = "choices"  # several values, offered as check boxes


def field_specs() -> list[dict]:
    """The conditions the builder offers (campaigns.audience.FIELDS) as the templates use them:
    key, label, ops [(op, label)], value_type, choices [(value, label)], needs, help."""
    return [
        {
            "key": spec["field"],
            "label": spec["label"],
            "ops": [(op, OP_LABELS.get(op, op.replace("_", " "))) for op in spec["ops"]],
            "value_type": spec["value_type"],
            "choices": [tuple(choice) for choice in spec.get("choices", [])],
            "needs": spec.get("needs", ""),
            "help": spec.get("help", ""),
        }
        for spec in FIELDS
    ]


def spec_for(key: str | None) -> dict:
    specs = field_specs()
    return next((spec for spec in specs if spec["key"] == key), specs[0])


class Row:
    """One condition row as the builder shows it: the field, its ops, and the chosen values.

    `values` is a list (check boxes of a multi-choice field) or one string; `key` names the
    attribute, `channel` the channel, for the fields that need one.
    """

    def __init__(self, *, field: str | None, op: str = "", values=None, key="", channel=""):
        self.spec = spec_for(field)
        self.field = self.spec["key"]
        ops = [name for name, _ in self.spec["ops"]]
        self.op = op if op in ops else (ops[0] if ops else "")
        self.values = [str(v) for v in (values or []) if str(v).strip()]
        self.key = key or ""
        self.channel = channel or ""
        # A select shows its first option: the row means what it shows.
        choices = [value for value, _ in self.spec["choices"]]
        if self.spec["value_type"] == "choice" and not self.values and choices:
            self.values = [choices[0]]
        if self.spec["needs"] == "channel" and not self.channel and choices:
            self.channel = choices[0]

    @property
    def value(self) -> str:
        return ", ".join(self.values)

    @property
    def op_label(self) -> str:
        return dict(self.spec["ops"]).get(self.op, self.op)

    def as_condition(self) -> dict:
        condition: dict = {"field": self.field, "op": self.op}
        if self.spec["value_type"] == MULTI:
            condition["value"] = self.values
        elif self.spec["value_type"] == "text_list" or (
            self.field == "attribute" and self.op == "in"
        ):
            condition["value"] = self.value
        else:
            condition["value"] = self.values[0] if self.values else ""
        if self.spec["needs"] == "key":
            condition["key"] = self.key.strip()
        elif self.spec["needs"] == "channel":
            condition["channel"] = self.channel
        return condition


def rows_from(data) -> list[Row]:
    """The builder's rows from a POST: `c-<n>-field`, `c-<n>-op`, `c-<n>-value` (repeated for
    check boxes), `c-<n>-key`, `c-<n>-channel`, for n in 0 … `conditions` - 1."""
    try:
        count = min(int(data.get("conditions", 0)), MAX_CONDITIONS)
    except ValueError:
        count = 0
    rows = []
    for index in range(count):
        prefix = f"c-{index}-"
        if prefix + "field" not in data:
            continue
        rows.append(
            Row(
                field=data.get(prefix + "field"),
                op=data.get(prefix + "op", ""),
                values=data.getlist(prefix + "value"),
                key=data.get(prefix + "key", ""),
                channel=data.get(prefix + "channel", ""),
            )
        )
    return rows


def rows_for(definition: dict) -> list[Row]:
    """The builder's rows for a saved definition."""
    rows = []
    for condition in (definition or {}).get("conditions", []):
        value = condition.get("value")
        values = value if isinstance(value, list) else ([] if value is None else [value])
        rows.append(
            Row(
                field=condition.get("field"),
                op=condition.get("op", ""),
                values=values,
                key=condition.get("key", ""),
                channel=condition.get("channel", ""),
            )
        )
    return rows


def definition_from(match: str, rows: list[Row]) -> dict:
    return {
        "match": match if match in dict(MATCH_CHOICES) else "all",
        "conditions": [row.as_condition() for row in rows],
    }


class SegmentForm(forms.Form):
    name = forms.CharField(max_length=200)
    description = forms.CharField(max_length=500, required=False)
    match = forms.ChoiceField(choices=MATCH_CHOICES, initial="all")


class TopicsField(forms.CharField):
    """Comma-separated topics (products or issues) → a list."""

    def to_python(self, value):
        value = super().to_python(value)
        return [topic.strip().lower() for topic in (value or "").split(",") if topic.strip()]

    def prepare_value(self, value):
        return ", ".join(value) if isinstance(value, list | tuple) else value


class CampaignForm(forms.Form):
    name = forms.CharField(max_length=200)
    channel = forms.ChoiceField(choices=CAMPAIGN_CHANNELS)
    segment = forms.ModelChoiceField(
        queryset=Segment.objects.order_by("name"), empty_label="Choose a segment"
    )
    subject = forms.CharField(
        max_length=300, required=False, help_text="The subject line (email only)."
    )
    content = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 7}),
        help_text="Placeholders: " + ", ".join("{{ %s }}" % p for p in PLACEHOLDERS),  # noqa: UP031
    )
    topics = TopicsField(
        required=False,
        help_text="Products or issues it is about, comma-separated (e.g. router, billing). "
        "A customer with an open case about one of them is not sent this campaign.",
    )
    schedule_mode = forms.ChoiceField(
        choices=ScheduleMode.choices, initial=ScheduleMode.AT, label="When to send"
    )
    scheduled_at = forms.DateTimeField(
        required=False,
        label="Start at",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    window_start_hour = forms.IntegerField(
        required=False, min_value=0, max_value=23, label="Window from (customer's hour)"
    )
    window_end_hour = forms.IntegerField(
        required=False, min_value=1, max_value=24, label="Window until (customer's hour)"
    )
    ends_at = forms.DateTimeField(
        required=False,
        label="Ends at",
        help_text="Held touches that are still held then expire.",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )


class OverrideRequestForm(forms.Form):
    reason = forms.ChoiceField(
        choices=[(r.value, r.label) for r in Reason if r in OVERRIDABLE_REASONS],
        widget=forms.HiddenInput,
    )
    justification = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Why these customers should get it",
        error_messages={"required": "Explain to the CCO why these customers should get it."},
    )
