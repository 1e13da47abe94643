"""The cases REST API (mounted at /api/cases/): doors onto the case services.

Service (agents, supervisors) works cases; the CCO reads every case and works none; marketers
get 403 on every endpoint. Agents and supervisors read and work the cases of their queues (a
supervisor's team) and those assigned to them — the same rules as the pages (`cases.access`),
and the services check them again. Every write goes through one service:
`cases.lifecycle` (open, status, assign), `cases.claiming` (take next), `cases.commitments`
and `cases.merging`.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Exists, OuterRef, Q
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import BasePagination
from rest_framework.parsers import JSONParser
from rest_framework.permissions import SAFE_METHODS
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter
from rest_framework.utils.urls import replace_query_param

from cases import commitments, lifecycle
from cases.access import (
    can_read_case,
    can_work_case,
    may_assign_to_others,
    member_queue_ids,
    sees_all_cases,
)
from cases.claiming import claim_next_case
from cases.merging import merge_cases
from cases.models import (
    OPEN_STATUSES,
    Case,
    Commitment,
    CommitmentKind,
    Priority,
    Queue,
    Status,
)
from cases.views import (
    SORT_KEYS,
    after_position,
    decode_position,
    encode_position,
    order_by,
)
from customers.models import Channel, Customer
from workbench import roles
from workbench.api import CanReadCases, CanWorkCases

MAX_TOPICS = 20
# The list's order: soonest SLA deadline first (paused and stopped clocks last), then priority.
LIST_KEYS = SORT_KEYS["sla"]


def as_api_error(exc: DjangoValidationError) -> serializers.ValidationError:
    """A service's ValidationError as DRF's, keyed by field where the service named one."""
    if hasattr(exc, "error_dict"):
        return serializers.ValidationError(exc.message_dict)
    return serializers.ValidationError({"non_field_errors": exc.messages})


def _call(service, **kwargs):
    try:
        return service(**kwargs)
    except DjangoValidationError as exc:
        raise as_api_error(exc) from None


def _validated(serializer_class, data, **context) -> dict:
    serializer = serializer_class(data=data, context=context)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _list_values(request, name: str) -> list[str]:
    """?status=new&status=open or ?status=new,open"""
    values = []
    for raw in request.query_params.getlist(name):
        values += [value.strip() for value in raw.split(",") if value.strip()]
    return values


def _clean_topics(topics: list[str]) -> list[str]:
    return [topic.strip() for topic in topics if topic.strip()]


# --- out -------------------------------------------------------------------------------------


class CaseSerializer(serializers.ModelSerializer):
    customer_name = serializers.SerializerMethodField()
    queue_name = serializers.CharField(source="queue.name", read_only=True)
    assignee_username = serializers.SlugRelatedField(
        source="assignee", slug_field="username", read_only=True, allow_null=True
    )

    class Meta:
        model = Case
        fields = [
            "id",
            "subject",
            "status",
            "priority",
            "customer",
            "customer_name",
            "queue",
            "queue_name",
            "assignee",
            "assignee_username",
            "channel",
            "topics",
            "created_at",
            "updated_at",
            "first_responded_at",
            "solved_at",
            "closed_at",
            "first_response_due_at",
            "resolution_due_at",
            "sla_due_at",
            "first_response_breached_at",
            "resolution_breached_at",
            "pauses_marketing",
            "merged_into",
        ]
        read_only_fields = fields

    def get_customer_name(self, case: Case) -> str:
        return str(case.customer)


class CommitmentSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )

    class Meta:
        model = Commitment
        fields = [
            "id",
            "case",
            "customer",
            "kind",
            "text",
            "due_at",
            "status",
            "topics",
            "created_by",
            "created_at",
            "resolved_at",
        ]
        read_only_fields = fields


class QueueSerializer(serializers.ModelSerializer):
    is_member = serializers.BooleanField(read_only=True, help_text="You belong to this queue.")

    class Meta:
        model = Queue
        fields = [
            "id",
            "name",
            "assignment_mode",
            "agent_capacity",
            "default_for_channels",
            "auto_close_days",
            "is_member",
        ]
        read_only_fields = fields


# --- in --------------------------------------------------------------------------------------


class TopicsField(serializers.ListField):
    child = serializers.CharField(max_length=50, allow_blank=True)

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", MAX_TOPICS)
        kwargs.setdefault("required", False)
        kwargs.setdefault("default", list)
        super().__init__(**kwargs)


class CaseCreateSerializer(serializers.Serializer):
    customer = serializers.IntegerField(min_value=1, help_text="The customer's id.")
    queue = serializers.IntegerField(
        min_value=1, help_text="A queue's id; an agent opens cases only in their own queues."
    )
    subject = serializers.CharField(max_length=300)
    channel = serializers.ChoiceField(
        choices=Channel.choices, help_text="Where the customer raised it."
    )
    priority = serializers.ChoiceField(choices=Priority.choices, default=Priority.NORMAL)
    topics = TopicsField(help_text='Product or issue tags, e.g. ["billing", "router"].')

    def validate_customer(self, pk: int) -> Customer:
        customer = Customer.objects.filter(pk=pk).first()
        if customer is None:
            raise serializers.ValidationError(f"There is no customer {pk}.")
        if customer.erased_at is not None:
            raise serializers.ValidationError(f"Customer {pk}'s data was erased.")
        return customer

    def validate_queue(self, pk: int) -> Queue:
        queue = Queue.objects.select_related("calendar").filter(pk=pk).first()
        if queue is None:
            raise serializers.ValidationError(f"There is no queue {pk}.")
        user = self.context["user"]
        if not sees_all_cases(user) and queue.pk not in member_queue_ids(user):
            raise serializers.ValidationError("You may only open cases in your own queues.")
        return queue

    def validate_topics(self, topics: list[str]) -> list[str]:
        return _clean_topics(topics)


class StatusInputSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Status.choices)


class AssignInputSerializer(serializers.Serializer):
    assignee = serializers.PrimaryKeyRelatedField(
        queryset=get_user_model().objects.filter(is_active=True),
        allow_null=True,
        help_text="A user's id (your own to take the case), or null to unassign.",
    )


class CommitmentInputSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=CommitmentKind.choices)
    text = serializers.CharField(max_length=1000, help_text="What was promised.")
    due_at = serializers.DateTimeField(help_text="When it is due; must be in the future.")
    topics = TopicsField()

    def validate_due_at(self, value):
        if value <= timezone.now():
            raise serializers.ValidationError("The due time must be in the future.")
        return value

    def validate_topics(self, topics: list[str]) -> list[str]:
        return _clean_topics(topics)


class MergeInputSerializer(serializers.Serializer):
    target = serializers.IntegerField(
        min_value=1, help_text="The case that stays open (same customer, not closed)."
    )


class CaseFilterSerializer(serializers.Serializer):
    """The list's query parameters (not in the schema as a body: see the list's parameters)."""

    status = serializers.ListField(
        child=serializers.ChoiceField(choices=Status.choices), required=False
    )
    queue = serializers.IntegerField(min_value=1, max_value=2**63 - 1, required=False)
    channel = serializers.ChoiceField(choices=Channel.choices, required=False)
    assignee = serializers.RegexField(
        r"^(me|none|[1-9][0-9]{0,17})$",
        required=False,
        error_messages={"invalid": "Use me, none or a user's id."},
    )
    topic = serializers.CharField(max_length=50, required=False)


# --- paging ----------------------------------------------------------------------------------


class SlaKeysetPagination(BasePagination):
    """Pages by position in (SLA due, priority, id) order, never OFFSET; NULL due times last.

    The cursor is the last row's keys, so a page costs the same wherever it starts and rows
    added meanwhile never shift a page.
    """

    page_size = 50
    max_page_size = 200
    cursor_query_param = "cursor"
    page_size_query_param = "page_size"

    def paginate_queryset(self, queryset, request, view=None):
        errors = {}
        size = self.page_size
        raw_size = request.query_params.get(self.page_size_query_param)
        if raw_size:
            if raw_size.isdigit() and 1 <= int(raw_size) <= self.max_page_size:
                size = int(raw_size)
            else:
                errors["page_size"] = [f"A whole number from 1 to {self.max_page_size}."]
        raw_cursor = request.query_params.get(self.cursor_query_param)
        if raw_cursor:
            try:
                position = decode_position(raw_cursor, LIST_KEYS)
            except (ValueError, OverflowError, OSError):
                errors["cursor"] = ["Not a position in this list."]
            else:
                queryset = queryset.filter(after_position(LIST_KEYS, position))
        if errors:
            raise serializers.ValidationError(errors)
        rows = list(queryset.order_by(*order_by(LIST_KEYS))[: size + 1])
        self.next_url = None
        if len(rows) > size:
            rows = rows[:size]
            self.next_url = replace_query_param(
                request.build_absolute_uri(),
                self.cursor_query_param,
                encode_position(rows[-1], LIST_KEYS),
            )
        return rows

    def get_paginated_response(self, data):
        return Response({"next": self.next_url, "results": data})

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["results"],
            "properties": {
                "next": {"type": "string", "nullable": True, "format": "uri"},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view):
        return [
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": "The position a `next` link carries.",
                "schema": {"type": "string"},
            },
            {
                "name": self.page_size_query_param,
                "required": False,
                "in": "query",
                "description": f"Rows per page, 1 to {self.max_page_size} "
                f"(default {self.page_size}).",
                "schema": {"type": "integer"},
            },
        ]


# --- cases -----------------------------------------------------------------------------------

COMMITMENT_PATH = "commitments/<int:commitment_pk>"
COMMITMENT_PK = OpenApiParameter(
    "commitment_pk", OpenApiTypes.INT, OpenApiParameter.PATH, description="The commitment's id."
)
REFUSED = {
    400: OpenApiResponse(description="Invalid input, named by field."),
    403: OpenApiResponse(description="Your role or this case's queue does not allow it."),
}


# Cases: list and filter, read, open, change status, assign, take next, commitments, merge.
# (A comment, not a docstring: the schema would repeat it on every operation.)
@extend_schema(tags=["cases"])
class CaseViewSet(viewsets.GenericViewSet):
    queryset = Case.objects.all()
    serializer_class = CaseSerializer
    pagination_class = SlaKeysetPagination
    parser_classes = [JSONParser]
    lookup_value_converter = "int"
    http_method_names = ["get", "post", "head", "options"]

    def get_permissions(self):
        if self.request.method in SAFE_METHODS:
            return [CanReadCases()]
        return [CanWorkCases()]

    def _cases(self):
        return Case.objects.select_related("customer", "queue", "assignee").defer(
            "customer__name_search", "customer__attributes"
        )

    def _readable(self, pk) -> Case:
        case = get_object_or_404(self._cases(), pk=pk)
        if not can_read_case(self.request.user, case):
            raise PermissionDenied("This case is not in your queues or assigned to you.")
        return case

    def _workable(self, pk) -> Case:
        case = self._readable(pk)
        if not can_work_case(self.request.user, case):
            raise PermissionDenied("Your role reads cases but does not work on them.")
        return case

    def _fresh(self, case: Case) -> dict:
        return CaseSerializer(self._cases().get(pk=case.pk)).data

    @extend_schema(
        summary="List the cases you may read, soonest SLA deadline first",
        parameters=[
            OpenApiParameter(
                "status",
                OpenApiTypes.STR,
                many=True,
                enum=Status.values,
                description="Only these statuses (repeat or separate by commas); "
                "default: new, open and pending.",
            ),
            OpenApiParameter("queue", OpenApiTypes.INT, description="Only this queue's cases."),
            OpenApiParameter(
                "channel", OpenApiTypes.STR, enum=Channel.values, description="Channel of origin."
            ),
            OpenApiParameter(
                "assignee",
                OpenApiTypes.STR,
                description="`me`, `none` (unassigned) or a user's id.",
            ),
            OpenApiParameter("topic", OpenApiTypes.STR, description="Cases tagged with it."),
        ],
        responses={200: CaseSerializer(many=True), 400: REFUSED[400]},
    )
    def list(self, request):
        filters = self._filters(request)
        rows = self._cases()
        user = request.user
        if not sees_all_cases(user):
            rows = rows.filter(Q(assignee=user) | Q(queue_id__in=member_queue_ids(user)))
        rows = rows.filter(status__in=filters.get("status") or OPEN_STATUSES)
        if "queue" in filters:
            rows = rows.filter(queue_id=filters["queue"])
        if "channel" in filters:
            rows = rows.filter(channel=filters["channel"])
        assignee = filters.get("assignee")
        if assignee == "me":
            rows = rows.filter(assignee=user)
        elif assignee == "none":
            rows = rows.filter(assignee__isnull=True)
        elif assignee is not None:
            rows = rows.filter(assignee_id=int(assignee))
        if "topic" in filters:
            rows = rows.filter(topics__contains=[filters["topic"].strip().lower()])
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(CaseSerializer(page, many=True).data)

    def _filters(self, request) -> dict:
        data = {}
        for name in ("queue", "channel", "assignee", "topic"):
            if name in request.query_params:
                data[name] = request.query_params[name]
        if statuses := _list_values(request, "status"):
            data["status"] = statuses
        return _validated(CaseFilterSerializer, data)

    @extend_schema(summary="Read a case (a merged one names its case in merged_into)")
    def retrieve(self, request, pk=None):
        return Response(CaseSerializer(self._readable(pk)).data)

    @extend_schema(
        summary="Open a case for a customer",
        request=CaseCreateSerializer,
        responses={201: CaseSerializer, **REFUSED},
    )
    def create(self, request):
        data = _validated(CaseCreateSerializer, request.data, user=request.user)
        case = _call(
            lifecycle.open_case,
            customer=data["customer"],
            queue=data["queue"],
            subject=data["subject"],
            channel=data["channel"],
            priority=data["priority"],
            topics=data["topics"],
            actor=request.user,
        )
        return Response(self._fresh(case), status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Move a case to another status (new → open → pending ↔ open → solved → closed)",
        request=StatusInputSerializer,
        responses={200: CaseSerializer, **REFUSED},
    )
    @action(detail=True, methods=["post"], url_path="status")
    def change_status(self, request, pk=None):
        case = self._workable(pk)
        data = _validated(StatusInputSerializer, request.data)
        _call(lifecycle.change_status, case=case, status=data["status"], actor=request.user)
        return Response(self._fresh(case))

    @extend_schema(
        summary="Assign a case (supervisors: a member of its queue, for the cases of their "
        "queues; everyone: take it or give it back)",
        request=AssignInputSerializer,
        responses={200: CaseSerializer, **REFUSED},
    )
    @action(detail=True, methods=["post"])
    def assign(self, request, pk=None):
        case = self._workable(pk)
        data = _validated(AssignInputSerializer, request.data)
        assignee = data["assignee"]
        is_own = (assignee is None and case.assignee_id == request.user.pk) or (
            assignee is not None and assignee.pk == request.user.pk
        )
        if not is_own and roles.is_supervisor(request.user):
            # The page's assign form offers the queue's members; the API holds to the same.
            if not may_assign_to_others(request.user, case):
                raise PermissionDenied("A supervisor assigns only the cases of their own queues.")
            if assignee is not None and not case.queue.members.filter(pk=assignee.pk).exists():
                raise serializers.ValidationError(
                    {"assignee": [f"{assignee} is not a member of the queue {case.queue}."]}
                )
        _call(lifecycle.assign_case, case=case, assignee=data["assignee"], actor=request.user)
        return Response(self._fresh(case))

    @extend_schema(
        summary="Take the most urgent unassigned case of your queues",
        request=None,
        responses={
            200: CaseSerializer,
            204: OpenApiResponse(description="Nothing is waiting in your queues."),
            403: REFUSED[403],
        },
    )
    @action(detail=False, methods=["post"], url_path="take-next")
    def take_next(self, request):
        case = claim_next_case(agent=request.user)
        if case is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(self._fresh(case))

    @extend_schema(
        methods=["GET"],
        summary="A case's commitments, soonest due first",
        responses=CommitmentSerializer(many=True),
    )
    @extend_schema(
        methods=["POST"],
        summary="Record a commitment on a case (it holds marketing for the customer)",
        request=CommitmentInputSerializer,
        responses={201: CommitmentSerializer, **REFUSED},
    )
    @action(detail=True, methods=["get", "post"], url_path="commitments", pagination_class=None)
    def case_commitments(self, request, pk=None):
        if request.method == "GET":
            case = self._readable(pk)
            rows = case.commitments.select_related("created_by").order_by("due_at", "id")
            return Response(CommitmentSerializer(rows, many=True).data)
        case = self._workable(pk)
        data = _validated(CommitmentInputSerializer, request.data)
        commitment = _call(
            commitments.record_commitment,
            case=case,
            kind=data["kind"],
            text=data["text"],
            due_at=data["due_at"],
            topics=data["topics"],
            actor=request.user,
        )
        return Response(CommitmentSerializer(commitment).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Mark an open commitment of this case kept",
        parameters=[COMMITMENT_PK],
        request=None,
        responses={200: CommitmentSerializer, **REFUSED},
    )
    @action(detail=True, methods=["post"], url_path=f"{COMMITMENT_PATH}/keep")
    def keep_commitment(self, request, pk=None, commitment_pk=None):
        return self._resolve(pk, commitment_pk, commitments.keep_commitment)

    @extend_schema(
        summary="Mark an open commitment of this case broken",
        parameters=[COMMITMENT_PK],
        request=None,
        responses={200: CommitmentSerializer, **REFUSED},
    )
    @action(detail=True, methods=["post"], url_path=f"{COMMITMENT_PATH}/break")
    def break_commitment(self, request, pk=None, commitment_pk=None):
        return self._resolve(pk, commitment_pk, commitments.break_commitment)

    def _resolve(self, pk, commitment_pk, service) -> Response:
        case = self._workable(pk)
        commitment = get_object_or_404(Commitment, pk=commitment_pk, case=case)
        resolved = _call(service, commitment=commitment, actor=self.request.user)
        fresh = Commitment.objects.select_related("created_by").get(pk=resolved.pk)
        return Response(CommitmentSerializer(fresh).data)

    @extend_schema(
        summary="Merge this case into another case of the same customer (this one closes)",
        request=MergeInputSerializer,
        responses={200: OpenApiResponse(CaseSerializer, "The case that stays open."), **REFUSED},
    )
    @action(detail=True, methods=["post"])
    def merge(self, request, pk=None):
        source = self._workable(pk)
        data = _validated(MergeInputSerializer, request.data)
        target = self._cases().filter(pk=data["target"]).first()
        if target is None:
            raise serializers.ValidationError({"target": [f"There is no case {data['target']}."]})
        if not can_work_case(request.user, target):
            raise PermissionDenied("The other case is not in your queues or assigned to you.")
        survivor = _call(merge_cases, source=source, target=target, actor=request.user)
        return Response(self._fresh(survivor))


# --- queues ----------------------------------------------------------------------------------


@extend_schema(tags=["cases"])
class QueueViewSet(viewsets.GenericViewSet):
    queryset = Queue.objects.all()
    serializer_class = QueueSerializer
    pagination_class = None
    permission_classes = [CanReadCases]

    @extend_schema(
        summary="The queues you work in (the CCO: every queue), by name",
        responses=QueueSerializer(many=True),
    )
    def list(self, request):
        user = request.user
        membership = Queue.members.through.objects.filter(queue_id=OuterRef("pk"), user_id=user.pk)
        rows = Queue.objects.annotate(is_member=Exists(membership)).order_by("name", "id")
        if not sees_all_cases(user):
            rows = rows.filter(is_member=True)
        return Response(QueueSerializer(rows, many=True).data)


router = SimpleRouter(use_regex_path=False)
router.register("queues", QueueViewSet, basename="queue")
router.register("", CaseViewSet, basename="case")

app_name = "cases-api"
urlpatterns = router.urls
