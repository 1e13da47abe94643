"""The composer's REST API (mounted with the cases API at /api/cases/): replies and notes.

POST /api/cases/<id>/replies/ sends a reply (queued, delivered by the worker), POST
/api/cases/<id>/notes/ adds an internal note; both may set the case's status in the same step.
Service works the cases of its queues and those assigned to it (supervisors any case): 401
without credentials, 403 for marketers, the CCO and agents outside the case's queues, 404 for
no such case, 400 for invalid input, 409 when someone else wrote after `seen_interaction_id`
(repeat with `confirm_collision: true` to send anyway). Nothing is stored on any refusal.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import APIView

from cases import replies
from cases.lifecycle import check_may_work_case
from cases.models import Case, Status
from customers.models import Channel, Interaction
from customers.serializers import InteractionSerializer
from workbench.api import CanWorkCases


class ReplyInputSerializer(serializers.Serializer):
    channel = serializers.ChoiceField(
        choices=Channel.choices, help_text="A channel the customer has a handle on; email sends."
    )
    body = serializers.CharField(max_length=replies.REPLY_MAX_CHARS)
    set_status = serializers.ChoiceField(
        choices=Status.choices,
        required=False,
        allow_null=True,
        help_text='Move the case too, e.g. "pending" (send and set pending).',
    )
    seen_interaction_id = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=0,
        help_text="The newest interaction the caller has seen; a message on the case after it "
        "by someone else is a 409. Omit to skip the check.",
    )
    confirm_collision = serializers.BooleanField(
        default=False, help_text="Send even though someone else wrote after seen_interaction_id."
    )


class NoteInputSerializer(serializers.Serializer):
    body = serializers.CharField(max_length=replies.NOTE_MAX_CHARS)
    set_status = serializers.ChoiceField(choices=Status.choices, required=False, allow_null=True)


WRITTEN = inline_serializer(
    "ComposerResult",
    {
        "interaction": InteractionSerializer(),
        "case": inline_serializer(
            "ComposerCase",
            {
                "id": serializers.IntegerField(),
                "status": serializers.CharField(),
                "first_responded_at": serializers.DateTimeField(allow_null=True),
            },
        ),
    },
)
COLLISION = inline_serializer(
    "ReplyCollision",
    {
        "detail": serializers.CharField(),
        "code": serializers.CharField(),
        "replied_by": serializers.ListField(child=serializers.CharField()),
        "latest_interaction_id": serializers.IntegerField(),
    },
)


class _ComposerView(APIView):
    permission_classes = [CanWorkCases]
    parser_classes = [JSONParser]

    def _case(self, request, pk: int) -> Case:
        case = get_object_or_404(Case.objects.select_related("queue"), pk=pk)
        # Before reading the input: an outsider learns nothing from its validation.
        check_may_work_case(request.user, case)
        return case

    def _validated(self, serializer_class, request) -> dict:
        serializer = serializer_class(data=request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def _written(self, request, case: Case, interaction: Interaction) -> Response:
        case.refresh_from_db(fields=["status", "first_responded_at"])
        data = {
            "interaction": InteractionSerializer(
                interaction, context={"request": request, "can_read_private": True}
            ).data,
            "case": {
                "id": case.pk,
                "status": case.status,
                "first_responded_at": serializers.DateTimeField().to_representation(
                    case.first_responded_at
                )
                if case.first_responded_at
                else None,
            },
        }
        return Response(data, status=status.HTTP_201_CREATED)


def _as_api_error(exc: DjangoValidationError) -> serializers.ValidationError:
    """The service's errors keyed by the input's names (its "status" is our "set_status")."""
    if hasattr(exc, "error_dict"):
        errors = {("set_status" if k == "status" else k): v for k, v in exc.message_dict.items()}
        return serializers.ValidationError(errors)
    return serializers.ValidationError({"non_field_errors": exc.messages})


class CaseReplies(_ComposerView):
    @extend_schema(
        tags=["cases"],
        summary="Reply to the case's customer (queued, then delivered on the channel)",
        request=ReplyInputSerializer,
        responses={
            201: WRITTEN,
            400: OpenApiResponse(description="Invalid input, or a channel with no sender yet"),
            403: OpenApiResponse(description="Not a case the caller may work"),
            409: COLLISION,
        },
    )
    def post(self, request, pk: int):
        case = self._case(request, pk)
        data = self._validated(ReplyInputSerializer, request)
        try:
            interaction = replies.send_reply(
                case=case,
                author=request.user,
                channel=data["channel"],
                body=data["body"],
                set_status=data.get("set_status"),
                seen_interaction_id=data.get("seen_interaction_id"),
                confirm_collision=data["confirm_collision"],
            )
        except replies.CollisionError as exc:
            return Response(
                {
                    "detail": exc.message,
                    "code": "collision",
                    "replied_by": exc.names,
                    "latest_interaction_id": exc.latest_id,
                },
                status=status.HTTP_409_CONFLICT,
            )
        except DjangoValidationError as exc:
            raise _as_api_error(exc) from None
        return self._written(request, case, interaction)


class CaseNotes(_ComposerView):
    @extend_schema(
        tags=["cases"],
        summary="Add an internal note to the case (private to service and the CCO)",
        request=NoteInputSerializer,
        responses={
            201: WRITTEN,
            400: OpenApiResponse(description="Invalid input"),
            403: OpenApiResponse(description="Not a case the caller may work"),
        },
    )
    def post(self, request, pk: int):
        case = self._case(request, pk)
        data = self._validated(NoteInputSerializer, request)
        try:
            interaction = replies.add_note(
                case=case, author=request.user, body=data["body"], set_status=data.get("set_status")
            )
        except DjangoValidationError as exc:
            raise _as_api_error(exc) from None
        return self._written(request, case, interaction)


# Included by workbench/urls.py under "api/cases/", next to cases.api's router.
urlpatterns = [
    path("<int:pk>/replies/", CaseReplies.as_view(), name="api-case-replies"),
    path("<int:pk>/notes/", CaseNotes.as_view(), name="api-case-notes"),
]
