"""The campaigns REST API (mounted at /api/campaigns/): doors onto marketing's services.

Marketers read and write; the CCO reads (every write is 403); service gets 403 on every
endpoint — the same rules as the pages. Writes go through one service each: `campaigns.editing`
(segments, drafts), `campaigns.lifecycle` (schedule, pause, resume, cancel),
`campaigns.overrides` (ask the CCO); reads through `campaigns.policy` (preflight) and
`campaigns.dispatch` (progress). A service's ValidationError is a 400 keyed by field.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.permissions import SAFE_METHODS
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from campaigns import editing, lifecycle, overrides, policy
from campaigns.audience import segment_count, validate_definition
from campaigns.dispatch import progress_for
from campaigns.models import Campaign, Override, Reason, ScheduleMode, Segment
from workbench.api import CanEditCampaigns, CanReadCampaigns

REFUSED = {
    400: OpenApiResponse(description="Invalid input: errors keyed by field."),
    403: OpenApiResponse(description="Your role may not do this (only marketers write)."),
}


def as_api_error(exc: DjangoValidationError) -> serializers.ValidationError:
    if hasattr(exc, "error_dict"):
        return serializers.ValidationError(exc.message_dict)
    return serializers.ValidationError({"non_field_errors": exc.messages})


def _call(service, **kwargs):
    try:
        return service(**kwargs)
    except DjangoValidationError as exc:
        raise as_api_error(exc) from None


class MarketingPermissions:
    """Reads (and counting a definition, which stores nothing): marketers and the CCO.
    Writes: marketers."""

    read_actions = ("count",)

    def get_permissions(self):
        if self.request.method in SAFE_METHODS or self.action in self.read_actions:
            return [CanReadCampaigns()]
        return [CanEditCampaigns()]


# --- segments --------------------------------------------------------------------------------


class SegmentSerializer(serializers.ModelSerializer):
    owner_username = serializers.SlugRelatedField(
        source="owner", slug_field="username", read_only=True, allow_null=True
    )

    class Meta:
        model = Segment
        fields = [
            "id",
            "name",
            "description",
            "definition",
            "owner",
            "owner_username",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class SegmentWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)
    definition = serializers.JSONField(
        help_text='{"match": "all" | "any", "conditions": [{"field", "op", "value"}, …]}'
    )


class DefinitionSerializer(serializers.Serializer):
    definition = serializers.JSONField()


class CountSerializer(serializers.Serializer):
    count = serializers.IntegerField()


@extend_schema(tags=["campaigns"])
class SegmentViewSet(MarketingPermissions, viewsets.GenericViewSet):
    queryset = Segment.objects.select_related("owner").order_by("-id")
    serializer_class = SegmentSerializer
    parser_classes = [JSONParser]
    lookup_value_converter = "int"
    http_method_names = ["get", "post", "put", "delete", "head", "options"]

    @extend_schema(summary="List segments, newest first")
    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(SegmentSerializer(page, many=True).data)

    @extend_schema(summary="Read a segment")
    def retrieve(self, request, pk=None):
        return Response(SegmentSerializer(self.get_object()).data)

    @extend_schema(
        summary="Save a segment",
        request=SegmentWriteSerializer,
        responses={201: SegmentSerializer, **REFUSED},
    )
    def create(self, request):
        serializer = SegmentWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        segment = _call(editing.create_segment, actor=request.user, **serializer.validated_data)
        return Response(SegmentSerializer(segment).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Change a segment (refused while a live campaign uses it)",
        request=SegmentWriteSerializer,
        responses={200: SegmentSerializer, **REFUSED},
    )
    def update(self, request, pk=None):
        segment = self.get_object()
        serializer = SegmentWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        segment = _call(
            editing.update_segment,
            segment=segment,
            actor=request.user,
            **serializer.validated_data,
        )
        return Response(SegmentSerializer(segment).data)

    @extend_schema(summary="Delete a segment no campaign uses", responses={204: None, **REFUSED})
    def destroy(self, request, pk=None):
        _call(editing.delete_segment, segment=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Count the customers a definition matches now (nothing is stored)",
        request=DefinitionSerializer,
        responses={200: CountSerializer, 400: REFUSED[400]},
    )
    @action(detail=False, methods=["post"])
    def count(self, request):
        serializer = DefinitionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            definition = validate_definition(serializer.validated_data["definition"])
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"definition": exc.messages}) from None
        return Response({"count": segment_count(definition)})

    @extend_schema(
        summary="Count the customers a saved segment matches now", responses={200: CountSerializer}
    )
    @action(detail=True, methods=["get"], url_path="count")
    def saved_count(self, request, pk=None):
        definition = validate_definition(self.get_object().definition)
        return Response({"count": segment_count(definition)})


# --- campaigns -------------------------------------------------------------------------------


class CampaignSerializer(serializers.ModelSerializer):
    owner_username = serializers.SlugRelatedField(
        source="owner", slug_field="username", read_only=True, allow_null=True
    )

    class Meta:
        model = Campaign
        fields = [
            "id",
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
            "status",
            "owner",
            "owner_username",
            "created_at",
            "updated_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class CampaignWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    channel = serializers.ChoiceField(choices=editing.CAMPAIGN_CHANNELS)
    subject = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")
    content = serializers.CharField(
        help_text="Placeholders: " + ", ".join("{{ %s }}" % p for p in editing.PLACEHOLDERS)  # noqa: UP031
    )
    segment = serializers.PrimaryKeyRelatedField(queryset=Segment.objects.all())
    topics = serializers.ListField(
        child=serializers.CharField(max_length=50),
        required=False,
        default=list,
        max_length=editing.MAX_TOPICS,
    )
    schedule_mode = serializers.ChoiceField(choices=ScheduleMode.choices, default=ScheduleMode.AT)
    scheduled_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    window_start_hour = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=0, max_value=23
    )
    window_end_hour = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=1, max_value=24
    )
    ends_at = serializers.DateTimeField(required=False, allow_null=True, default=None)


class PreflightSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    counts = serializers.DictField(
        child=serializers.IntegerField(), help_text='Outcome ("send" or a reason) → customers.'
    )
    policy_version = serializers.IntegerField(allow_null=True)
    computed_at = serializers.DateTimeField()


class PreflightCustomerSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    detail = serializers.CharField()


class ProgressSerializer(serializers.Serializer):
    sent = serializers.IntegerField()
    held = serializers.IntegerField()
    suppressed = serializers.IntegerField()
    failed = serializers.IntegerField()
    expired = serializers.IntegerField()
    remaining = serializers.IntegerField()
    total = serializers.IntegerField()


class OverrideSerializer(serializers.ModelSerializer):
    class Meta:
        model = Override
        fields = [
            "id",
            "campaign",
            "reason",
            "justification",
            "status",
            "requested_by",
            "requested_at",
            "decided_by",
            "decided_at",
            "decision_note",
        ]
        read_only_fields = fields


class OverrideRequestSerializer(serializers.Serializer):
    reason = serializers.ChoiceField(
        choices=[(r.value, r.label) for r in Reason if r in overrides.OVERRIDABLE_REASONS]
    )
    justification = serializers.CharField(max_length=overrides.MAX_TEXT)


LIFECYCLE = {
    "schedule": lifecycle.schedule_campaign,
    "pause": lifecycle.pause_campaign,
    "resume": lifecycle.resume_campaign,
    "cancel": lifecycle.cancel_campaign,
}


@extend_schema(tags=["campaigns"])
class CampaignViewSet(MarketingPermissions, viewsets.GenericViewSet):
    queryset = Campaign.objects.select_related("owner").order_by("-id")
    serializer_class = CampaignSerializer
    parser_classes = [JSONParser]
    lookup_value_converter = "int"
    http_method_names = ["get", "post", "put", "delete", "head", "options"]

    def _fresh(self, campaign: Campaign) -> dict:
        return CampaignSerializer(self.get_queryset().get(pk=campaign.pk)).data

    @extend_schema(summary="List campaigns, newest first")
    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(CampaignSerializer(page, many=True).data)

    @extend_schema(summary="Read a campaign")
    def retrieve(self, request, pk=None):
        return Response(CampaignSerializer(self.get_object()).data)

    @extend_schema(
        summary="Save a draft campaign (owned by you)",
        request=CampaignWriteSerializer,
        responses={201: CampaignSerializer, **REFUSED},
    )
    def create(self, request):
        serializer = CampaignWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        campaign = _call(editing.create_campaign, actor=request.user, **serializer.validated_data)
        return Response(self._fresh(campaign), status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Change your draft (only drafts, only their owner)",
        request=CampaignWriteSerializer,
        responses={200: CampaignSerializer, **REFUSED},
    )
    def update(self, request, pk=None):
        campaign = self.get_object()
        serializer = CampaignWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        campaign = _call(
            editing.update_campaign,
            campaign=campaign,
            actor=request.user,
            **serializer.validated_data,
        )
        return Response(self._fresh(campaign))

    @extend_schema(summary="Delete your draft", responses={204: None, **REFUSED})
    def destroy(self, request, pk=None):
        _call(editing.delete_draft, campaign=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Preflight: the audience split by outcome under the current contact policy",
        responses={200: PreflightSerializer},
    )
    @action(detail=True, methods=["get"])
    def preflight(self, request, pk=None):
        result = policy.preflight(campaign=self.get_object())
        return Response(
            {
                "total": result.total,
                "counts": result.counts,
                "policy_version": result.policy_version,
                "computed_at": result.computed_at,
            }
        )

    @extend_schema(
        summary="Who falls under one preflight outcome (names only), 50 after `after`",
        parameters=[
            OpenApiParameter("outcome", OpenApiTypes.STR, required=True, enum=[*policy.OUTCOMES]),
            OpenApiParameter("after", OpenApiTypes.INT, description="A customer id."),
        ],
        responses={200: PreflightCustomerSerializer(many=True), 400: REFUSED[400]},
    )
    @action(detail=True, methods=["get"], url_path="preflight/customers", pagination_class=None)
    def preflight_customers(self, request, pk=None):
        outcome = request.query_params.get("outcome", "")
        after = request.query_params.get("after", "0")
        errors = {}
        if outcome not in policy.OUTCOMES:
            errors["outcome"] = [f"One of: {', '.join(policy.OUTCOMES)}."]
        if not after.isdigit():
            errors["after"] = ["A customer id."]
        if errors:
            raise serializers.ValidationError(errors)
        rows = policy.preflight_customers(
            campaign=self.get_object(), outcome=outcome, after_id=int(after), limit=50
        )
        return Response([{"id": pk_, "name": name, "detail": detail} for pk_, name, detail in rows])

    @extend_schema(summary="Touches by status", responses={200: ProgressSerializer})
    @action(detail=True, methods=["get"])
    def progress(self, request, pk=None):
        return Response(progress_for(self.get_object()))

    def _lifecycle(self, request, pk, name: str):
        campaign = self.get_object()
        _call(LIFECYCLE[name], campaign=campaign, actor=request.user)
        return Response(self._fresh(campaign))

    @extend_schema(
        summary="Schedule your draft", request=None, responses={200: CampaignSerializer, **REFUSED}
    )
    @action(detail=True, methods=["post"])
    def schedule(self, request, pk=None):
        return self._lifecycle(request, pk, "schedule")

    @extend_schema(
        summary="Pause a scheduled or sending campaign",
        request=None,
        responses={200: CampaignSerializer, **REFUSED},
    )
    @action(detail=True, methods=["post"])
    def pause(self, request, pk=None):
        return self._lifecycle(request, pk, "pause")

    @extend_schema(
        summary="Resume a paused campaign",
        request=None,
        responses={200: CampaignSerializer, **REFUSED},
    )
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        return self._lifecycle(request, pk, "resume")

    @extend_schema(
        summary="Cancel a campaign (touches not sent yet never will be)",
        request=None,
        responses={200: CampaignSerializer, **REFUSED},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        return self._lifecycle(request, pk, "cancel")

    @extend_schema(
        summary="Ask the CCO to override one hold reason on this campaign",
        request=OverrideRequestSerializer,
        responses={201: OverrideSerializer, **REFUSED},
    )
    @action(detail=True, methods=["post"])
    def overrides(self, request, pk=None):
        campaign = self.get_object()
        serializer = OverrideRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        override = _call(
            overrides.request_override,
            campaign=campaign,
            actor=request.user,
            **serializer.validated_data,
        )
        return Response(OverrideSerializer(override).data, status=status.HTTP_201_CREATED)


router = SimpleRouter(use_regex_path=False)
router.register("segments", SegmentViewSet, basename="segment")
router.register("", CampaignViewSet, basename="campaign")

app_name = "campaigns-api"
urlpatterns = router.urls
