"""Engagement and value: four engagement measures and lifetime value per customer, computed from
the timeline by one set-based statement (the nightly `customers.compute_engagement` task).

The formulas (the console's "how is this computed" shows the same text):

- **Involvement** = visits + opens over the last WINDOW_DAYS days. A visit is a timeline entry of
  kind `visit`; an open is a campaign-touch entry whose data says `"opened": true` or has an
  `opened_at`.
- **Interaction** = inbound messages + purchases over the last WINDOW_DAYS days.
- **Intimacy** = (P - N) / (P + N + 1), where P and N count the words of POSITIVE_WORDS and
  NEGATIVE_WORDS in the customer's inbound messages over the window (whole words, any case).
  It runs from -1 (hostile) to +1 (warm); the +1 keeps one word from reading as certainty.
- **Influence** = public mentions + reach / 1000: one point per public post (an inbound entry
  whose data says `"public": true`, as the social connectors store them) and one per thousand
  people those posts reached (their data's `reach`), over the window.
- **Lifetime value** = the sum of `amount` of every purchase entry, ever (refunds are negative
  purchases). Customer equity of a group is the sum of its lifetime values.

Merged customers (tombstones) get no row: their timeline moved to the survivor.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from customers.models import Engagement

COMPUTE_TASK = "customers.compute_engagement"
WINDOW_DAYS = 365
REACH_PER_POINT = 1000
POSITIVE_WORDS = (
    "thanks", "thank", "great", "love", "excellent", "happy", "perfect", "amazing", "helpful",
    "brilliant", "awesome", "appreciate", "good", "wonderful", "glad",
)  # fmt: skip
NEGATIVE_WORDS = (
    "angry", "terrible", "awful", "bad", "worst", "hate", "disappointed", "useless", "broken",
    "refund", "cancel", "complaint", "unacceptable", "poor", "slow",
)  # fmt: skip


def _pattern(words: tuple[str, ...]) -> str:
    return r"\m(" + "|".join(words) + r")\M"


def word_counts(text: str) -> tuple[int, int]:
    """(positive, negative) lexicon words in `text`: the same rule the SQL applies."""
    words = re.findall(r"[a-z0-9']+", (text or "").lower())
    positive, negative = set(POSITIVE_WORDS), set(NEGATIVE_WORDS)
    return sum(w in positive for w in words), sum(w in negative for w in words)


def intimacy_score(positive: int, negative: int) -> float:
    return round((positive - negative) / (positive + negative + 1), 3)


def influence_score(public_mentions: int, reach: int) -> float:
    return round(public_mentions + reach / REACH_PER_POINT, 3)


@dataclass(frozen=True)
class EngagementRun:
    customers: int
    interactions: int
    seconds: float


_SQL = r"""
WITH stats AS (
    SELECT i.customer_id,
        count(*) FILTER (WHERE i.kind = 'visit' AND i.occurred_at >= %(since)s) AS visits,
        count(*) FILTER (
            WHERE i.kind = 'campaign_touch' AND i.occurred_at >= %(since)s
              AND (i.data->>'opened' = 'true' OR i.data ? 'opened_at')
        ) AS opens,
        count(*) FILTER (
            WHERE i.kind = 'message' AND i.direction = 'in' AND i.occurred_at >= %(since)s
        ) AS messages,
        count(*) FILTER (WHERE i.kind = 'purchase' AND i.occurred_at >= %(since)s) AS purchases,
        coalesce(sum(CASE WHEN i.kind = 'message' AND i.direction = 'in'
                           AND i.occurred_at >= %(since)s AND i.body_text <> ''
            THEN (SELECT count(*) FROM regexp_matches(lower(i.body_text), %(positive)s, 'g'))
            ELSE 0 END), 0) AS positive_words,
        coalesce(sum(CASE WHEN i.kind = 'message' AND i.direction = 'in'
                           AND i.occurred_at >= %(since)s AND i.body_text <> ''
            THEN (SELECT count(*) FROM regexp_matches(lower(i.body_text), %(negative)s, 'g'))
            ELSE 0 END), 0) AS negative_words,
        count(*) FILTER (
            WHERE i.direction = 'in' AND i.data->>'public' = 'true' AND i.occurred_at >= %(since)s
        ) AS public_mentions,
        coalesce(sum(CASE WHEN i.direction = 'in' AND i.data->>'public' = 'true'
                           AND i.occurred_at >= %(since)s
                           AND i.data->>'reach' ~ '^[0-9]{1,15}$'
            THEN (i.data->>'reach')::bigint ELSE 0 END), 0) AS reach,
        coalesce(sum(CASE WHEN i.kind = 'purchase'
                           AND i.data->>'amount' ~ '^-?[0-9]{1,12}(\.[0-9]+)?$'
            THEN (i.data->>'amount')::numeric ELSE 0 END), 0) AS lifetime_value
    FROM customers_interaction i
    GROUP BY i.customer_id
), merged AS (
    DELETE FROM customers_engagement e USING customers_customer c
    WHERE e.customer_id = c.id AND c.merged_into_id IS NOT NULL
)
INSERT INTO customers_engagement (
    customer_id, visits, opens, messages, purchases, positive_words, negative_words,
    public_mentions, reach, involvement, interaction, intimacy, influence, lifetime_value,
    computed_at
)
SELECT c.id,
    coalesce(s.visits, 0), coalesce(s.opens, 0), coalesce(s.messages, 0),
    coalesce(s.purchases, 0), coalesce(s.positive_words, 0), coalesce(s.negative_words, 0),
    coalesce(s.public_mentions, 0), coalesce(s.reach, 0),
    coalesce(s.visits + s.opens, 0),
    coalesce(s.messages + s.purchases, 0),
    round(coalesce((s.positive_words - s.negative_words)::numeric
                   / (s.positive_words + s.negative_words + 1), 0), 3)::float8,
    round(coalesce(s.public_mentions + s.reach::numeric / %(per_point)s, 0), 3)::float8,
    round(coalesce(s.lifetime_value, 0), 2),
    %(now)s
FROM customers_customer c
LEFT JOIN stats s ON s.customer_id = c.id
WHERE c.merged_into_id IS NULL
ON CONFLICT (customer_id) DO UPDATE SET
    visits = EXCLUDED.visits, opens = EXCLUDED.opens, messages = EXCLUDED.messages,
    purchases = EXCLUDED.purchases, positive_words = EXCLUDED.positive_words,
    negative_words = EXCLUDED.negative_words, public_mentions = EXCLUDED.public_mentions,
    reach = EXCLUDED.reach, involvement = EXCLUDED.involvement,
    interaction = EXCLUDED.interaction, intimacy = EXCLUDED.intimacy,
    influence = EXCLUDED.influence, lifetime_value = EXCLUDED.lifetime_value,
    computed_at = EXCLUDED.computed_at
"""


def compute_engagement(*, now=None) -> EngagementRun:
    """Recompute every live customer's engagement row from the whole timeline, in one
    statement (one transaction): safe to run twice, the second run writes the same numbers."""
    now = now or timezone.now()
    started = time.perf_counter()
    params = {
        "since": now - timedelta(days=WINDOW_DAYS),
        "positive": _pattern(POSITIVE_WORDS),
        "negative": _pattern(NEGATIVE_WORDS),
        "per_point": REACH_PER_POINT,
        "now": now,
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_SQL, params)
        customers = cursor.rowcount
        cursor.execute("SELECT count(*) FROM customers_interaction")
        interactions = cursor.fetchone()[0]
    return EngagementRun(
        customers=customers,
        interactions=interactions,
        seconds=round(time.perf_counter() - started, 3),
    )


def last_computed_at():
    """When the job last ran (None before its first run)."""
    return Engagement.objects.aggregate(at=Max("computed_at"))["at"]
