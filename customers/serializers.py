"""The customers API's shapes: what a caller reads (models out) and may send (validated in).

Input serializers only validate and name the field at fault; the services in
customers.importing, customers.consent and customers.timeline do the writing.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation

from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from customers.identity import normalise_handle
from customers.importing import MAX_ATTRIBUTES_JSON_CHARS, MAX_NAME_CHARS
from customers.models import (
    IDENTITY_CHANNELS,
    Channel,
    Consent,
    ConsentPurpose,
    Customer,
    Identity,
    Interaction,
    Kind,
    LifecycleStage,
)
from customers.timeline import MAX_BODY_CHARS, MAX_TITLE_CHARS

PRIVATE_NOTE_TITLE = "Private note by service"
MAX_IDENTITIES_PER_REQUEST = 20
MAX_DATA_JSON_CHARS = 16_000
EXTERNAL_KINDS = (Kind.PURCHASE, Kind.VISIT)
IDENTITY_CHANNEL_CHOICES = [(channel.value, channel.label) for channel in IDENTITY_CHANNELS]


def _json_size(value) -> int:
    return len(json.dumps(value, default=str))


# The identity channels are a subset of the channels under the same field name ("channel"),
# which drf-spectacular cannot name as a second enum without a settings override: the schema
# lists them in the description instead.
@extend_schema_field(
    {
        "type": "string",
        "description": "An identity channel: " + ", ".join(c.value for c in IDENTITY_CHANNELS),
    }
)
class IdentityChannelField(serializers.ChoiceField):
    def __init__(self, **kwargs):
        super().__init__(choices=IDENTITY_CHANNEL_CHOICES, **kwargs)


@extend_schema_field({"type": "string", "enum": Channel.values})
class SourceField(serializers.ChoiceField):
    def __init__(self, **kwargs):
        super().__init__(choices=Channel.choices, **kwargs)


@extend_schema_field({"type": "string", "enum": [k.value for k in EXTERNAL_KINDS]})
class ExternalKindField(serializers.ChoiceField):
    def __init__(self, **kwargs):
        super().__init__(choices=[(k.value, k.label) for k in EXTERNAL_KINDS], **kwargs)


# --- out -------------------------------------------------------------------------------------


class IdentitySerializer(serializers.ModelSerializer):
    class Meta:
        model = Identity
        fields = ["id", "channel", "handle", "display_name", "created_at"]
        read_only_fields = fields


class CustomerSerializer(serializers.ModelSerializer):
    name = serializers.CharField(source="display_name", read_only=True)
    identities = IdentitySerializer(many=True, read_only=True)
    is_erased = serializers.BooleanField(read_only=True)

    class Meta:
        model = Customer
        fields = [
            "id",
            "name",
            "lifecycle_stage",
            "attributes",
            "timezone",
            "identities",
            "merged_into",
            "is_erased",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class ConsentSerializer(serializers.ModelSerializer):
    source = SourceField(read_only=True)
    recorded_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Consent
        fields = ["id", "purpose", "is_granted", "source", "note", "recorded_by", "recorded_at"]
        read_only_fields = fields


class InteractionSerializer(serializers.ModelSerializer):
    """One timeline entry. A private note's title, bodies and data are withheld from a caller
    who may not read private notes (context `can_read_private`): they see that it exists."""

    actor = serializers.CharField(source="actor_label", read_only=True)
    subject_type = serializers.SerializerMethodField()
    body_text = serializers.CharField(read_only=True, allow_null=True)
    body_html = serializers.CharField(read_only=True, allow_null=True)

    class Meta:
        model = Interaction
        fields = [
            "id",
            "channel",
            "kind",
            "direction",
            "occurred_at",
            "actor",
            "title",
            "body_text",
            "body_html",
            "is_private",
            "status",
            "data",
            "external_id",
            "subject_type",
            "subject_id",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.STR)
    def get_subject_type(self, interaction: Interaction) -> str | None:
        if interaction.subject_type_id is None:
            return None
        # get_for_id is cached per process: no query per entry.
        content_type = ContentType.objects.get_for_id(interaction.subject_type_id)
        return f"{content_type.app_label}.{content_type.model}"

    def to_representation(self, interaction: Interaction) -> dict:
        data = super().to_representation(interaction)
        if interaction.is_private and not self.context.get("can_read_private", False):
            data.update(title=PRIVATE_NOTE_TITLE, body_text=None, body_html=None, data={})
        return data


class TimelinePageSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True, help_text="The next (older) page, or null.")
    results = InteractionSerializer(many=True)


# --- in --------------------------------------------------------------------------------------


class AttributesField(serializers.DictField):
    """A JSON object of attributes (plan, region, products…); at most 64 kB as JSON."""

    child = serializers.JSONField(allow_null=True)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if _json_size(value) > MAX_ATTRIBUTES_JSON_CHARS:
            raise serializers.ValidationError(
                f"attributes are larger than {MAX_ATTRIBUTES_JSON_CHARS} bytes as JSON"
            )
        return value


class IdentityInputSerializer(serializers.Serializer):
    channel = IdentityChannelField()
    handle = serializers.CharField(max_length=255)
    display_name = serializers.CharField(
        max_length=200, required=False, allow_blank=True, default=""
    )

    def validate(self, attrs: dict) -> dict:
        try:
            attrs["handle"] = normalise_handle(attrs["channel"], attrs["handle"])
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"handle": exc.messages}) from None
        return attrs


class CustomerCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=MAX_NAME_CHARS)
    lifecycle_stage = serializers.ChoiceField(
        choices=LifecycleStage.choices, default=LifecycleStage.LEAD
    )
    attributes = AttributesField(required=False, default=dict)
    timezone = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    identities = IdentityInputSerializer(
        many=True, required=False, default=list, max_length=MAX_IDENTITIES_PER_REQUEST
    )


class CustomerUpdateSerializer(serializers.Serializer):
    """PATCH: only the fields sent change. Attributes are merged; a key set to null is removed."""

    name = serializers.CharField(max_length=MAX_NAME_CHARS, required=False)
    lifecycle_stage = serializers.ChoiceField(choices=LifecycleStage.choices, required=False)
    attributes = AttributesField(required=False)
    timezone = serializers.CharField(max_length=64, required=False, allow_blank=True)


class ConsentInputSerializer(serializers.Serializer):
    purpose = serializers.ChoiceField(choices=ConsentPurpose.choices)
    is_granted = serializers.BooleanField()
    source = SourceField(help_text="The channel the customer said it on.")
    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class ExternalInteractionInputSerializer(serializers.Serializer):
    """A purchase or a visit from another system. The idempotency key makes a retry harmless:
    it is stored as the entry's external id on the `api` channel."""

    kind = ExternalKindField()
    idempotency_key = serializers.CharField(min_length=1, max_length=255)
    occurred_at = serializers.DateTimeField(required=False)
    title = serializers.CharField(
        max_length=MAX_TITLE_CHARS, required=False, allow_blank=True, default=""
    )
    body_text = serializers.CharField(
        max_length=MAX_BODY_CHARS, required=False, allow_blank=True, default=""
    )
    data = serializers.DictField(
        child=serializers.JSONField(),
        required=False,
        default=dict,
        help_text='Facts about it, e.g. {"amount": "19.99", "currency": "EUR"}.',
    )

    def validate_data(self, data: dict) -> dict:
        if _json_size(data) > MAX_DATA_JSON_CHARS:
            raise serializers.ValidationError(
                f"data is larger than {MAX_DATA_JSON_CHARS} bytes as JSON"
            )
        if "amount" in data:
            try:
                amount = Decimal(str(data["amount"]))
            except InvalidOperation:
                raise serializers.ValidationError("amount must be a decimal number") from None
            if not amount.is_finite():
                raise serializers.ValidationError("amount must be a decimal number")
            data["amount"] = str(amount)
        currency = data.get("currency")
        if currency is not None and not (
            isinstance(currency, str) and len(currency) == 3 and currency.isalpha()
        ):
            raise serializers.ValidationError("currency must be a three-letter ISO 4217 code")
        if currency is not None:
            data["currency"] = currency.upper()
        return data
