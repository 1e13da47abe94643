"""Template tags: the page's realtime socket (its groups and the sequence it has seen)."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from django import template
from django.utils.html import format_html

from workbench import realtime

register = template.Library()


@register.simple_tag
def realtime_socket(groups) -> str:
    """The hub connection for this page: `{% realtime_socket realtime_groups %}`.

    The sequence numbers are read before the page's fragments are rendered from the database
    (the tag sits at the top of <main>), so any event newer than what the page shows is either
    delivered on the socket or spotted as a gap.
    """
    names = [name for name in groups or [] if realtime.parse_group(name) is not None]
    if not names:
        return ""
    seqs = realtime.current_seqs(names)
    url = "/ws/hub/?" + urlencode([("group", name) for name in names])
    return format_html(
        '<div id="realtime" hidden hx-ext="ws" ws-connect="{}" data-wb-seq="{}"></div>',
        url,
        json.dumps(seqs),
    )
