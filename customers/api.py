"""The customers REST API (mounted at /api/customers/): doors onto the customer services.

Every role reads; service (agents, supervisors) and the CCO write profiles, identities and
external interactions; consent is recorded by whoever roles.can_record_consent allows.
Marketers read only, and see private notes as "Private note by service" without a body.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Prefetch
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException
from rest_framework.parsers import JSONParser
from rest_framework.permissions import SAFE_METHODS
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter
from rest_framework.utils.urls import replace_query_param

from customers import importing
from customers.consent import record_consent
from customers.identity import live_customer
from customers.models import Channel, Consent, Customer, Direction, Identity, Interaction, Kind
from customers.search import search_customers
from customers.serializers import (
    ConsentInputSerializer,
    ConsentSerializer,
    CustomerCreateSerializer,
    CustomerSerializer,
    CustomerUpdateSerializer,
    ExternalInteractionInputSerializer,
    IdentityInputSerializer,
    IdentitySerializer,
    InteractionSerializer,
    TimelinePageSerializer,
)
from customers.timeline import PAGE_SIZE, Cursor, record_interaction, timeline_page
from workbench import roles
from workbench.api import HasRole, predicate_permission

SEARCH_LIMIT = 50

# Profiles are service's to keep right; marketing reads them (DESIGN.md, "Who uses it").
CanEditCustomers = predicate_permission(roles.can_edit_customers, name="CanEditCustomers")
CanRecordConsent = predicate_permission(roles.can_record_consent, name="CanRecordConsent")


class Conflict(APIException):
    """A write to a merged tombstone or an erased customer, or a reused idempotency key."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


def as_api_error(exc: DjangoValidationError) -> serializers.ValidationError:
    """A service's ValidationError as DRF's, keyed by field; `identities.1.handle` becomes
    {"identities": {"1": {"handle": […]}}}, the shape DRF gives a nested list's own errors."""
    if not hasattr(exc, "error_dict"):
        return serializers.ValidationError({"non_field_errors": exc.messages})
    errors: dict = {}
    for key, messages in exc.message_dict.items():
        *path, field = key.split(".")
        node = errors
        for part in path:
            node = node.setdefault(part, {})
        node[field] = messages
    return serializers.ValidationError(errors)


def _writable(customer: Customer) -> Customer:
    if customer.merged_into_id is not None:
        survivor = live_customer(customer)
        raise Conflict(f"Customer {customer.pk} was merged into {survivor.pk}; use that one.")
    if customer.erased_at is not None:
        raise Conflict(f"Customer {customer.pk}'s data was erased.")
    return customer


def _list_values(request, name: str) -> list[str]:
    """?channel=email&channel=chat or ?channel=email,chat"""
    values = []
    for raw in request.query_params.getlist(name):
        values += [value.strip() for value in raw.split(",") if value.strip()]
    return values


# Customers: list and search, create, read, update, and their identities, consents, timeline
# and external interactions. (A comment, not a docstring: the schema would repeat it on every
# operation; each one has its own summary.)
@extend_schema(tags=["customers"])
class CustomerViewSet(viewsets.GenericViewSet):
    serializer_class = CustomerSerializer
    parser_classes = [JSONParser]
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self):
        return (
            Customer.objects.defer("name_search")
            .prefetch_related(Prefetch("identities", Identity.objects.order_by("channel", "id")))
            .order_by("-pk")
        )

    def get_permissions(self):
        if self.request.method in SAFE_METHODS:
            return [HasRole()]
        if self.action == "consents":
            return [CanRecordConsent()]
        return [CanEditCustomers()]

    # --- customers ---------------------------------------------------------------------------

    @extend_schema(
        summary="List customers, or search them",
        parameters=[
            OpenApiParameter(
                "q",
                OpenApiTypes.STR,
                description=f"Search by name words or the start of any handle (email, phone, "
                f"@name); the best {SEARCH_LIMIT} matches on one page, ordered by name.",
            )
        ],
    )
    def list(self, request):
        query = request.query_params.get("q", "").strip()
        if query:
            found = search_customers(query, limit=SEARCH_LIMIT).prefetch_related(
                Prefetch("identities", Identity.objects.order_by("channel", "id"))
            )
            results = CustomerSerializer(found, many=True).data
            return Response({"next": None, "previous": None, "results": results})
        page = self.paginate_queryset(self.get_queryset().filter(merged_into__isnull=True))
        return self.get_paginated_response(CustomerSerializer(page, many=True).data)

    @extend_schema(
        summary="Create a customer with their identities",
        request=CustomerCreateSerializer,
        responses={201: CustomerSerializer},
    )
    def create(self, request):
        data = self._validated(CustomerCreateSerializer, request)
        customer = self._call(
            importing.create_customer,
            actor=request.user,
            name=data["name"],
            lifecycle_stage=data["lifecycle_stage"],
            attributes=data["attributes"],
            timezone_name=data["timezone"],
            identities=[(i["channel"], i["handle"]) for i in data["identities"]],
        )
        return Response(self._fresh(customer), status=status.HTTP_201_CREATED)

    @extend_schema(summary="Read a customer (a merged one names its survivor in merged_into)")
    def retrieve(self, request, pk=None):
        return Response(CustomerSerializer(self.get_object()).data)

    @extend_schema(
        summary="Change a customer's name, lifecycle stage, attributes or time zone",
        request=CustomerUpdateSerializer,
        responses=CustomerSerializer,
    )
    def partial_update(self, request, pk=None):
        customer = _writable(self.get_object())
        data = self._validated(CustomerUpdateSerializer, request)
        self._call(
            importing.update_customer,
            customer=customer,
            actor=request.user,
            channel=Channel.API,
            name=data.get("name"),
            lifecycle_stage=data.get("lifecycle_stage"),
            attributes=data.get("attributes"),
            timezone_name=data.get("timezone"),
        )
        return Response(self._fresh(customer))

    # --- identities --------------------------------------------------------------------------

    @extend_schema(
        methods=["GET"], summary="A customer's identities", responses=IdentitySerializer(many=True)
    )
    @extend_schema(
        methods=["POST"],
        summary="Attach a handle to a customer (200 when they already have it)",
        request=IdentityInputSerializer,
        responses={201: IdentitySerializer, 200: IdentitySerializer},
    )
    @action(detail=True, methods=["get", "post"])
    def identities(self, request, pk=None):
        customer = self.get_object()
        if request.method == "GET":
            rows = self.paginate_queryset(Identity.objects.filter(customer=customer))
            return self.get_paginated_response(IdentitySerializer(rows, many=True).data)
        _writable(customer)
        data = self._validated(IdentityInputSerializer, request)
        identity, created = self._call(
            importing.add_identity,
            customer=customer,
            channel=data["channel"],
            handle=data["handle"],
            display_name=data["display_name"],
        )
        return Response(
            IdentitySerializer(identity).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    # --- consents ----------------------------------------------------------------------------

    @extend_schema(
        methods=["GET"],
        summary="A customer's consent records, newest first (the evidence)",
        responses=ConsentSerializer(many=True),
    )
    @extend_schema(
        methods=["POST"],
        summary="Record a grant or withdrawal (effective at once)",
        request=ConsentInputSerializer,
        responses={201: ConsentSerializer},
    )
    @action(detail=True, methods=["get", "post"])
    def consents(self, request, pk=None):
        customer = self.get_object()
        if request.method == "GET":
            rows = Consent.objects.filter(customer=customer).select_related("recorded_by")
            page = self.paginate_queryset(rows)
            return self.get_paginated_response(ConsentSerializer(page, many=True).data)
        _writable(customer)
        data = self._validated(ConsentInputSerializer, request)
        consent = self._call(
            record_consent,
            customer=customer,
            purpose=data["purpose"],
            is_granted=data["is_granted"],
            source=data["source"],
            note=data["note"],
            recorded_by=request.user,
        )
        return Response(ConsentSerializer(consent).data, status=status.HTTP_201_CREATED)

    # --- timeline ----------------------------------------------------------------------------

    @extend_schema(
        summary="A customer's timeline, newest first, keyset-paginated",
        parameters=[
            OpenApiParameter(
                "channel",
                OpenApiTypes.STR,
                many=True,
                description="Only these channels (repeat the parameter or separate by commas).",
            ),
            OpenApiParameter(
                "kind", OpenApiTypes.STR, many=True, description="Only these kinds (as channel)."
            ),
            OpenApiParameter(
                "cursor", OpenApiTypes.STR, description="The position `next` links carry."
            ),
        ],
        responses=TimelinePageSerializer,
    )
    @action(detail=True, methods=["get"], pagination_class=None)
    def timeline(self, request, pk=None):
        customer = self.get_object()
        channels, kinds = _list_values(request, "channel"), _list_values(request, "kind")
        errors = {}
        if unknown := [c for c in channels if c not in Channel.values]:
            errors["channel"] = [f"unknown channel {c!r}" for c in unknown]
        if unknown := [k for k in kinds if k not in Kind.values]:
            errors["kind"] = [f"unknown kind {k!r}" for k in unknown]
        before = None
        if request.query_params.get("cursor"):
            try:
                before = Cursor.decode(request.query_params["cursor"])
            except DjangoValidationError:
                errors["cursor"] = ["not a timeline position"]
        if errors:
            raise serializers.ValidationError(errors)
        page = timeline_page(
            customer.pk, channels=channels, kinds=kinds, before=before, size=PAGE_SIZE
        )
        next_url = None
        if page.next_cursor is not None:
            next_url = replace_query_param(
                request.build_absolute_uri(), "cursor", page.next_cursor.encode()
            )
        context = {"can_read_private": roles.can_read_private_notes(request.user)}
        results = InteractionSerializer(page.entries, many=True, context=context).data
        return Response({"next": next_url, "results": results})

    # --- external interactions ---------------------------------------------------------------

    @extend_schema(
        summary="Record a purchase or visit from another system (idempotent by key)",
        request=ExternalInteractionInputSerializer,
        responses={
            201: InteractionSerializer,
            200: OpenApiResponse(
                InteractionSerializer, description="The key was seen before: the stored entry."
            ),
            409: OpenApiResponse(description="The key was used for another customer."),
        },
    )
    @action(detail=True, methods=["post"])
    def interactions(self, request, pk=None):
        customer = _writable(self.get_object())
        data = self._validated(ExternalInteractionInputSerializer, request)
        key = data["idempotency_key"]
        existing = Interaction.objects.filter(channel=Channel.API, external_id=key).first()
        if existing is None:
            existing, created = self._call(
                record_interaction,
                customer=customer,
                channel=Channel.API,
                kind=data["kind"],
                direction=Direction.INBOUND,
                occurred_at=data.get("occurred_at"),
                title=data["title"],
                body_text=data["body_text"],
                data=data["data"],
                external_id=key,
                actor=request.user,
            )
        else:
            created = False
        if live_customer(existing.customer).pk != customer.pk:
            raise Conflict("This idempotency_key was already used for another customer.")
        context = {"can_read_private": roles.can_read_private_notes(request.user)}
        return Response(
            InteractionSerializer(existing, context=context).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    # --- plumbing ----------------------------------------------------------------------------

    def _validated(self, serializer_class, request) -> dict:
        serializer = serializer_class(data=request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def _call(self, service, **kwargs):
        try:
            return service(**kwargs)
        except DjangoValidationError as exc:
            raise as_api_error(exc) from None

    def _fresh(self, customer: Customer) -> dict:
        return CustomerSerializer(self.get_queryset().get(pk=customer.pk)).data


router = SimpleRouter()
router.register("", CustomerViewSet, basename="customer")

app_name = "customers-api"
urlpatterns = router.urls
