"""Customer search: one box that finds people by name words or by the start of any handle.

Why full-text plus a btree prefix index, not pg_trgm: the embedded PostgreSQL (`pgserver`) ships
without the pg_trgm extension, and a search that works on one machine but not on another is no
search. Both indexes used here are core PostgreSQL, so every installation has them:

- Names: `Customer.name_search` is a generated tsvector (config 'simple': names are not English
  words, so nothing is stemmed or dropped as a stop word) with a GIN index. Each word typed
  becomes a prefix term (`'ann':* & 'ob':*`), so word order does not matter and partial words
  match as the person types ("ann ob" finds "Ann O'Brien").
- Handles: `Identity.handle` has a `varchar_pattern_ops` btree index, so `LIKE 'prefix%'` is an
  index range scan. Handles are searched by their beginning, which is how people type an email
  address, a phone number or an @name. The query is normalised the way handles are stored
  (emails case-folded, phone numbers to E.164, @names lower case) so "07700 900123" finds
  +447700900123.

Both halves run in one SQL statement (`id IN (names UNION handles)`): a UNION lets PostgreSQL use
each index on its own, where an OR across the two tables would scan every customer.
"""

from __future__ import annotations

import re

import phonenumbers
from django.conf import settings
from django.contrib.postgres.search import SearchQuery
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.db.models.functions import Lower

from customers.identity import normalise_phone
from customers.models import Customer, Identity

MAX_QUERY_CHARS = 200
MAX_WORDS = 8
_WORD = re.compile(r"[\w@.+-]+")
_PHONE_LIKE = re.compile(r"^\+?[0-9][0-9 ()./-]*$")
_SOCIAL = re.compile(r"^[a-z0-9_.]{1,50}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # PostgreSQL refuses NUL; none belongs in a search


def search_customers(query: str, *, limit: int = 25) -> QuerySet[Customer]:
    """Live (not merged) customers whose name words or any handle start with what was typed.

    Ordered by name; at most `limit`. An empty or punctuation-only query matches nobody.
    """
    query = _CONTROL.sub("", query or "").strip()[:MAX_QUERY_CHARS]
    words = _WORD.findall(query)[:MAX_WORDS]
    if not words:
        return Customer.objects.none()
    # Sanitised words cannot contain quotes, so quoting each one keeps tsquery syntax inert.
    terms = " & ".join(f"'{word.lower()}':*" for word in words)
    by_name = Customer.objects.filter(
        name_search=SearchQuery(terms, search_type="raw", config="simple")
    ).values("id")
    matched = by_name
    prefixes = handle_prefixes(query)
    if prefixes:
        starts = Q()
        for prefix in prefixes:
            starts |= Q(handle__startswith=prefix)
        matched = by_name.union(Identity.objects.filter(starts).values("customer_id"))
    return (
        Customer.objects.filter(pk__in=matched, merged_into__isnull=True)
        .defer("name_search")
        .order_by(Lower("display_name"), "id")[:limit]
    )


def handle_prefixes(query: str) -> list[str]:
    """The spellings a handle starting with `query` would be stored under (see identity.py)."""
    query = query.strip()
    if _PHONE_LIKE.match(query):
        digits = re.sub(r"[^0-9]", "", query)
        # E.164 as stored; the bare digits too, for Messenger ids and numbers typed without '+'.
        prefixes = [_phone_prefix(query), digits, "" if digits.startswith("0") else "+" + digits]
    elif query and not any(char.isspace() for char in query):
        folded = query.casefold()
        # Emails and @names as stored (folded), chat tokens as typed (they keep their case),
        # and an @name typed without its '@'.
        prefixes = [folded, query, "@" + folded if _SOCIAL.match(folded) else ""]
    else:
        return []  # several words: a name, not a handle
    return [prefix for prefix in dict.fromkeys(prefixes) if prefix and prefix != "+"]


def _phone_prefix(query: str) -> str:
    """E.164 for a whole number; for a partial one, the E.164 prefix it must start with."""
    try:
        return normalise_phone(query)
    except ValidationError:
        pass
    digits = re.sub(r"[^0-9]", "", query)
    if query.startswith("+"):
        return "+" + digits
    if digits.startswith("00"):
        return "+" + digits[2:]
    region = getattr(settings, "PHONE_DEFAULT_REGION", "GB")
    country_code = phonenumbers.country_code_for_region(region)
    trunk = phonenumbers.ndd_prefix_for_region(region, True) or ""
    if trunk and digits.startswith(trunk):
        return f"+{country_code}{digits[len(trunk) :]}"
    return ""
