"""Privacy requests (the CCO's alone): export everything held about a customer, or erase them.

Both find the data generically, through every relation pointing at Customer (the same walk as
merge), so an app added later is exported without changing this module. Erasure cannot know
which columns of another app's model are personal data, so an app whose rows hold any
(a case's subject line, say) registers an eraser with `register_eraser`; customers' own
models are erased here.

What erasure keeps, and why:
- the customer row (renamed "Erased customer <id>"), its lifecycle stage and dates, and every
  interaction's channel, kind, direction, dates, status, subject link and privacy flag: counts
  and dates are what reporting needs and identify nobody; `amount` and `currency` of an
  interaction's data are kept for revenue reports;
- consent rows (purpose, granted or withdrawn, source channel, when, who recorded it): they
  are the evidence that past marketing was lawful, kept while that evidence may be asked for;
  their free-text note is blanked. They never linked to an identity, so nothing ties them to a
  handle once identities are gone.
What it destroys: identities (every handle), name, attributes, time zone, interaction titles,
bodies, other data keys, provider ids (`external_id` becomes NULL: a provider's message id can
be looked up at the provider, and a re-sent webhook then creates a new, anonymous entry instead
of matching the erased one) and the labels of entries no user wrote (a sender's name). Profiles
merged into the customer earlier (tombstones) are erased with it: they are the same person.
The audit log keeps that the erasure happened, never what was erased.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from django.core import serializers
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.db.models import F, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce
from django.utils import timezone

from customers.merge import customer_relations
from customers.models import Channel, Consent, Customer, Direction, Identity, Interaction, Kind
from customers.timeline import record_interaction
from workbench import roles
from workbench.audit import record_audit

EXPORT_FORMAT = "workbench.customer-export/1"
# Interaction data keys that survive erasure: they make revenue reports add up and name nobody.
KEPT_DATA_KEYS = ("amount", "currency")

Eraser = Callable[[Customer], int]
_erasers: dict[str, Eraser] = {}


def register_eraser(label: str, erase: Eraser) -> None:
    """Let an app blank the personal data its own rows hold about a customer.

    `erase(customer)` runs inside the erasure's transaction, once per profile (the customer and
    its tombstones), before the customer's own rows are blanked (so it can still read the
    timeline), and returns how many rows or files it erased (reported in the audit log). Work
    outside the database (deleting files) belongs in `transaction.on_commit`, so a rolled-back
    erasure loses nothing.
    """
    _erasers[label] = erase


def unregister_eraser(label: str) -> None:
    """Remove an eraser (tests register their own and clean up after themselves)."""
    _erasers.pop(label, None)


def _profiles(customer: Customer) -> list[Customer]:
    """The customer and the tombstones of profiles merged into it (one hop: merge keeps it so)."""
    return [customer, *Customer._base_manager.filter(merged_into=customer).order_by("pk")]


def _serialise(rows) -> list[dict]:
    """Rows as JSON-safe dicts; users and content types by natural key (a username, a label)."""
    model = rows.model
    names = [f.name for f in model._meta.local_fields if not f.primary_key and not f.generated]
    names += [f.name for f in model._meta.local_many_to_many]
    data = serializers.serialize(
        "python", rows.iterator(chunk_size=2000), fields=names, use_natural_foreign_keys=True
    )
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def _refuse_tombstone(customer: Customer, action: str) -> None:
    if customer.is_merged:
        raise ValidationError(
            f"Customer {customer.pk} was merged into customer {customer.merged_into_id}; "
            f"{action} that customer instead (it holds this profile's data)."
        )


def export_customer(*, customer: Customer, actor) -> dict:
    """Everything held about a customer, as one JSON-safe dict; audited and on the timeline.

    The CCO only (PermissionDenied otherwise). Holds the profile, the profiles merged into it,
    and the rows of every model pointing at the customer — identities, consents with their
    evidence, interactions with their bodies (private notes included: they are the data
    subject's data) and whatever other apps hold — under their model label. A tombstone is
    refused (ValidationError): its data lives with the survivor.
    """
    if not roles.can_handle_privacy(actor):
        raise PermissionDenied("Only the CCO can export a customer's data.")
    _refuse_tombstone(customer, "export")
    with transaction.atomic():
        profiles = _profiles(customer)
        records: dict[str, list[dict]] = {}
        for relation in customer_relations():
            rows = relation.model._base_manager.filter(
                **{f"{relation.field_name}__in": profiles}
            ).order_by("pk")
            records.setdefault(relation.label, []).extend(_serialise(rows))
        export = {
            "format": EXPORT_FORMAT,
            "exported_at": timezone.now().isoformat(),
            "customer": _serialise(Customer._base_manager.filter(pk=customer.pk))[0],
            "merged_profiles": _serialise(
                Customer._base_manager.filter(pk__in=[p.pk for p in profiles[1:]]).order_by("pk")
            ),
            "records": records,
        }
        counts = {label: len(rows) for label, rows in records.items()}
        record_interaction(
            customer=customer,
            channel=Channel.SYSTEM,
            kind=Kind.PROFILE,
            direction=Direction.INTERNAL,
            title="Customer data exported",
            actor=actor,
            data={"records": counts},
        )
        record_audit(
            actor=actor, action="customer.export", target=customer, details={"records": counts}
        )
    return export


def erase_customer(*, customer: Customer, actor) -> Customer:
    """Erase a customer's personal data, keeping counts and dates (see the module docstring).

    The CCO only (PermissionDenied). Refuses (ValidationError) a customer already erased and a
    tombstone (erase the survivor: that erases the tombstone too), re-checked on the locked
    row. One transaction: everything is erased or nothing is. Audited, and the timeline keeps
    one entry "Customer data erased".
    """
    if not roles.can_handle_privacy(actor):
        raise PermissionDenied("Only the CCO can erase a customer's data.")
    with transaction.atomic():
        customer = Customer.objects.select_for_update().get(pk=customer.pk)
        _refuse_tombstone(customer, "erase")
        if customer.is_erased:
            raise ValidationError(
                f"Customer {customer.pk} was already erased on {customer.erased_at:%Y-%m-%d}."
            )
        now = timezone.now()
        counts = {"identities": 0, "interactions": 0, "consents": 0}
        for profile in _profiles(customer):
            # Other apps' erasers first: they may read what the timeline still holds (the paths
            # of a mail's stored attachments) before it is blanked below.
            for label, erase in _erasers.items():
                counts[label] = counts.get(label, 0) + erase(profile)
            counts["identities"] += Identity.objects.filter(customer=profile).delete()[0]
            counts["interactions"] += _blank_interactions(profile)
            counts["consents"] += Consent.objects.filter(customer=profile).update(note="")
            profile.display_name = f"Erased customer {profile.pk}"
            profile.attributes = {}
            profile.timezone = ""
            profile.erased_at = now
            profile.save(
                update_fields=["display_name", "attributes", "timezone", "erased_at", "updated_at"]
            )
        record_interaction(
            customer=customer,
            channel=Channel.SYSTEM,
            kind=Kind.PROFILE,
            direction=Direction.INTERNAL,
            title="Customer data erased",
            actor=actor,
            data={"erased": counts},
        )
        record_audit(
            actor=actor, action="customer.erase", target=customer, details={"erased": counts}
        )
    return customer


def _blank_interactions(customer: Customer) -> int:
    """Blank every interaction of one profile in one UPDATE; return how many."""
    kept_data = RawSQL(
        "COALESCE((SELECT jsonb_object_agg(key, value) FROM jsonb_each(data)"
        " WHERE key = ANY(%s)), '{}'::jsonb)",
        (list(KEPT_DATA_KEYS),),
        output_field=models.JSONField(),
    )
    return Interaction.objects.filter(customer=customer).update(
        title="",
        body_text="",
        body_html="",
        data=kept_data,
        external_id=None,
        actor_label=Coalesce(
            models.Case(models.When(actor__isnull=False, then=F("actor_label"))), Value("")
        ),
    )
