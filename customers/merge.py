"""Merge: two profiles of one person become one; the merged profile stays as a tombstone.

Everything that points at the merged customer is found through the model relations
(`Customer._meta.related_objects`), never through a list of models, so an app added later
(cases, campaigns, …) is carried along without changing this module.

Rows that cannot move because the survivor already has their twin — a model with a unique
constraint that includes its customer field (say one touch per campaign and customer), or a
one-to-one row the survivor already owns — stay with the tombstone, where they remain readable
as history; the preview counts them under `stays`, so nobody is surprised. Constraints written
as expressions (not field lists) cannot be checked generically: such a model must avoid them on
its customer field, or the merge refuses with a database error and changes nothing.

Generic relations (content type + id) that point at a customer are not re-pointed: a tombstone
redirects, so they still lead to the person.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models, transaction
from django.db.models import Exists, OuterRef, Prefetch, Q, prefetch_related_objects
from django.utils import timezone

from customers.models import Channel, Customer, Direction, Identity, Kind
from customers.search import search_customers
from customers.timeline import record_interaction
from workbench import roles
from workbench.audit import record_audit

TOMBSTONE_FIELD = "merged_into"
MAX_CANDIDATES = 20


@dataclass(frozen=True)
class Relation:
    """One foreign key (or the customer side of a many-to-many's link table) to Customer."""

    model: type[models.Model]
    field_name: str
    label: str  # the model's label_lower, e.g. "customers.identity"
    unique_with: tuple[tuple[tuple[str, ...], Q | None], ...]  # other fields of each unique set


@dataclass
class MergePreview:
    """What a merge would do: rows moving per model label, rows staying with the tombstone."""

    survivor: Customer
    merged: Customer
    moves: dict[str, int] = field(default_factory=dict)
    stays: dict[str, int] = field(default_factory=dict)
    tombstones: int = 0  # customers merged earlier into the merged one, re-pointed too

    @property
    def total(self) -> int:
        return sum(self.moves.values())


def customer_relations() -> list[Relation]:
    """Every relation pointing at Customer from any installed app, except the tombstone link.

    A many-to-many to Customer is represented by its link table's foreign key, which is what
    holds the rows.
    """
    relations: list[Relation] = []
    seen: set[tuple[type[models.Model], str]] = set()
    for rel in Customer._meta.related_objects:
        if rel.related_model is Customer and rel.field.name == TOMBSTONE_FIELD:
            continue
        if rel.many_to_many:
            model, fk_name = rel.through, rel.field.m2m_reverse_field_name()
        else:
            model, fk_name = rel.related_model, rel.field.name
        if (model, fk_name) in seen:  # an explicit link table shows up as FK and as M2M
            continue
        seen.add((model, fk_name))
        relations.append(
            Relation(
                model=model,
                field_name=fk_name,
                label=model._meta.label_lower,
                unique_with=_unique_sets(model, fk_name),
            )
        )
    return relations


def _unique_sets(model, fk_name: str) -> tuple[tuple[tuple[str, ...], Q | None], ...]:
    """For each field-list uniqueness rule that includes fk_name: (the other fields, condition)."""
    sets: list[tuple[tuple[str, ...], Q | None]] = []
    fk = model._meta.get_field(fk_name)
    if fk.one_to_one or fk.unique:
        sets.append(((), None))
    for together in model._meta.unique_together:
        if fk_name in together:
            sets.append((tuple(f for f in together if f != fk_name), None))
    for constraint in model._meta.total_unique_constraints + [
        c
        for c in model._meta.constraints
        if isinstance(c, models.UniqueConstraint) and c.fields and c.condition is not None
    ]:
        if fk_name in constraint.fields:
            others = tuple(f for f in constraint.fields if f != fk_name)
            sets.append((others, constraint.condition))
    return tuple(sets)


def _rows(relation: Relation, customer: Customer) -> models.QuerySet:
    return relation.model._base_manager.filter(**{relation.field_name: customer})


def _staying(relation: Relation, *, survivor: Customer, merged: Customer) -> models.QuerySet:
    """The merged customer's rows whose twin the survivor already holds (they cannot move)."""
    collide = Q()
    for others, condition in relation.unique_with:
        twin = _rows(relation, survivor).filter(**{name: OuterRef(name) for name in others})
        clash = Q(Exists(twin.filter(condition) if condition is not None else twin))
        collide |= (clash & condition) if condition is not None else clash
    return _rows(relation, merged).filter(collide) if collide else _rows(relation, merged).none()


def merge_candidates(
    *, survivor: Customer, query: str, limit: int = MAX_CANDIDATES
) -> list[Customer]:
    """Customers one could merge into `survivor`: found by the search box or by number.

    Live ones only (not merged, not erased, not the survivor itself), with their identities
    prefetched (ordered by channel and handle) for showing side by side.
    """
    query = query.strip()
    number = query.removeprefix("#")
    found: list[Customer] = []
    if number.isdigit() and len(number) <= 18:
        found += Customer.objects.filter(pk=int(number))
    # One more than the limit: the survivor itself may be among the matches.
    found += search_customers(query, limit=limit + 1)
    candidates = list(
        {
            c.pk: c for c in found if c.pk != survivor.pk and not c.is_merged and not c.is_erased
        }.values()
    )[:limit]
    prefetch_related_objects(
        candidates, Prefetch("identities", Identity.objects.order_by("channel", "handle"))
    )
    return candidates


def _check_can_merge(*, survivor: Customer, merged: Customer) -> None:
    if survivor.pk == merged.pk:
        raise ValidationError("A customer cannot be merged into itself: pick another customer.")
    for customer in (survivor, merged):
        if customer.is_merged:
            raise ValidationError(
                f"Customer {customer.pk} was already merged into customer "
                f"{customer.merged_into_id}; merge with that customer instead."
            )
        if customer.is_erased:
            raise ValidationError(f"Customer {customer.pk} was erased and cannot be merged.")


def preview_merge(*, survivor: Customer, merged: Customer) -> MergePreview:
    """Count what `merge_customers` would move from `merged` to `survivor`, changing nothing.

    Keys are model labels ("customers.interaction"), one per model pointing at Customer, with
    zero for models that have nothing to move. Raises ValidationError for a merge that would be
    refused (same customer, a tombstone, an erased customer).
    """
    _check_can_merge(survivor=survivor, merged=merged)
    preview = MergePreview(survivor=survivor, merged=merged)
    for relation in customer_relations():
        staying = (
            _staying(relation, survivor=survivor, merged=merged).count()
            if relation.unique_with
            else 0
        )
        total = _rows(relation, merged).count()
        preview.moves[relation.label] = preview.moves.get(relation.label, 0) + total - staying
        if staying:
            preview.stays[relation.label] = preview.stays.get(relation.label, 0) + staying
    preview.tombstones = Customer._base_manager.filter(merged_into=merged).count()
    return preview


def merge_customers(*, survivor: Customer, merged: Customer, actor) -> Customer:
    """Move everything of `merged` to `survivor`, leave `merged` as a tombstone; return survivor.

    Supervisors and the CCO only (PermissionDenied otherwise). Refuses (ValidationError) the
    same customer twice, a tombstone, or an erased customer, re-checked after both rows are
    locked (in primary-key order, so two merges of the same pair cannot deadlock). One UPDATE
    per relation inside one transaction: either everything moves or nothing does. Attributes
    are merged with the survivor winning on conflict; tombstones of earlier merges into the
    merged customer point at the survivor afterwards, so a redirect is never more than one hop.
    The merge is on the survivor's timeline (live) and in the audit log.
    """
    if not roles.can_merge_customers(actor):
        raise PermissionDenied("Only a supervisor or the CCO can merge customers.")
    _check_can_merge(survivor=survivor, merged=merged)
    with transaction.atomic():
        locked = {
            c.pk: c
            for c in Customer.objects.select_for_update()
            .filter(pk__in=[survivor.pk, merged.pk])
            .order_by("pk")
        }
        if len(locked) != 2:
            raise ValidationError("One of the customers no longer exists.")
        survivor, merged = locked[survivor.pk], locked[merged.pk]
        _check_can_merge(survivor=survivor, merged=merged)

        moved: dict[str, int] = {}
        kept: dict[str, int] = {}
        for relation in customer_relations():
            rows = _rows(relation, merged)
            if relation.unique_with:
                staying = list(
                    _staying(relation, survivor=survivor, merged=merged).values_list(
                        "pk", flat=True
                    )
                )
                if staying:
                    kept[relation.label] = kept.get(relation.label, 0) + len(staying)
                    rows = rows.exclude(pk__in=staying)
            count = rows.update(**{relation.field_name: survivor})
            if count:  # the audit names what moved, not every model that could have
                moved[relation.label] = moved.get(relation.label, 0) + count
        tombstones = Customer._base_manager.filter(merged_into=merged).update(merged_into=survivor)

        survivor.attributes = {**merged.attributes, **survivor.attributes}
        survivor.display_name = survivor.display_name or merged.display_name
        survivor.timezone = survivor.timezone or merged.timezone
        survivor.save(update_fields=["attributes", "display_name", "timezone", "updated_at"])
        merged.merged_into = survivor
        merged.merged_at = timezone.now()
        merged.save(update_fields=["merged_into", "merged_at", "updated_at"])

        details = {
            "merged_id": merged.pk,
            "moved": moved,
            "stayed": kept,
            "tombstones": tombstones,
        }
        record_interaction(
            customer=survivor,
            channel=Channel.SYSTEM,
            kind=Kind.PROFILE,
            direction=Direction.INTERNAL,
            title=f"Merged Customer {merged.pk} ({merged.display_name}) into this profile",
            actor=actor,
            data=details,
        )
        record_audit(actor=actor, action="customer.merge", target=survivor, details=details)
    return survivor
