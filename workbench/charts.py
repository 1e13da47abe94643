"""Charts drawn on the server as SVG: bars (grouped or stacked) and lines, with axes, labels and
accessible titles, plus the same numbers as table rows and CSV. No JavaScript, no CDN.

A chart is a `ChartData` (categories along x, one or more named series of numbers); `render_svg`
draws it and `csv_text` writes it, so the picture, the table and the download always agree.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

BAR, STACKED, LINE = "bar", "stacked", "line"
# Colour-blind-safe palette (Okabe-Ito, darkened where white text or thin lines need contrast).
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#7a7a00", "#555")

WIDTH, PLOT_HEIGHT = 560, 190
LEFT, RIGHT, TOP, X_LABELS = 60, 12, 14, 30
LEGEND_ROW = 18
MAX_BAR = 56


@dataclass(frozen=True)
class Series:
    name: str
    values: list[float]


@dataclass(frozen=True)
class ChartData:
    """What a chart shows. `unit` is appended to numbers ("%"); `y_max` pins the scale."""

    key: str
    title: str
    kind: str
    categories: list[str]
    series: list[Series]
    x_label: str = ""
    y_label: str = ""
    unit: str = ""
    y_max: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)
    # Columns shown in the table and the CSV only (counts behind a percentage, say).
    table_only: list[Series] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not self.categories or not any(any(s.values) for s in self.series)

    @property
    def header(self) -> list[str]:
        return [self.x_label or "", *(s.name for s in (*self.series, *self.table_only))]

    @property
    def display_rows(self) -> list[list[str]]:
        """The table's cells as shown: the chart's own numbers with their unit."""
        return _display_rows(self)

    @property
    def rows(self) -> list[list]:
        return [
            [category, *(_number(s.values[i]) for s in (*self.series, *self.table_only))]
            for i, category in enumerate(self.categories)
        ]


def _display_rows(chart: ChartData) -> list[list[str]]:
    return [
        [
            category,
            *(_fmt(s.values[i], chart.unit) for s in chart.series),
            *(_fmt(s.values[i]) for s in chart.table_only),
        ]
        for i, category in enumerate(chart.categories)
    ]


def _number(value: float) -> float | int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return round(value, 1) if isinstance(value, float) else value


def _fmt(value: float, unit: str = "") -> str:
    return f"{_number(value)}{unit}"


def nice_max(value: float, *, whole: bool = False) -> float:
    """The top of the y axis: the data's maximum rounded up to 1, 2, 2.5 or 5 times a power of
    ten; for counts (`whole`) at least 5, so the five grid steps are whole numbers."""
    if value <= 0:
        return 5 if whole else 1
    if whole and value <= 5:
        return 5
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power  # pragma: no cover


def csv_text(chart: ChartData) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(chart.header)
    writer.writerows(chart.rows)
    return out.getvalue()


def render_svg(chart: ChartData) -> SafeString:
    """The chart as an inline <svg> element (role="img", <title> and <desc>)."""
    totals = (
        [sum(s.values[i] for s in chart.series) for i in range(len(chart.categories))]
        if chart.kind == STACKED
        else [v for s in chart.series for v in s.values]
    )
    whole = all(float(v).is_integer() for v in totals)
    top = chart.y_max or nice_max(max(totals, default=0), whole=whole)
    legend_rows = _legend_layout(chart)
    height = (
        TOP
        + PLOT_HEIGHT
        + X_LABELS
        + LEGEND_ROW * (max(r for r, _ in legend_rows) + 1 if legend_rows else 0)
    )
    plot_w, plot_h = WIDTH - LEFT - RIGHT, PLOT_HEIGHT
    base_y = TOP + plot_h

    def y_of(value: float) -> float:
        return base_y - (value / top) * plot_h if top else base_y

    ident = f"chart-{chart.key}"
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-labelledby="{ident}-title {ident}-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{ident}-title">{escape(chart.title)}</title>',
        f'<desc id="{ident}-desc">{escape(_describe(chart))}</desc>',
    ]
    # Grid and y axis: five steps.
    for step in range(6):
        value = top * step / 5
        y = y_of(value)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(_fmt(value, chart.unit))}</text>"
        )
    if chart.y_label:
        parts.append(
            f'<text class="axis-label" transform="translate(12 {TOP + plot_h / 2:.0f}) '
            f'rotate(-90)" text-anchor="middle">{escape(chart.y_label)}</text>'
        )
    n = max(len(chart.categories), 1)
    slot = plot_w / n
    label_every = max(1, math.ceil(n / 8))
    for i, category in enumerate(chart.categories):
        x_mid = LEFT + slot * (i + 0.5)
        if i % label_every == 0:
            parts.append(
                f'<text class="tick" x="{x_mid:.1f}" y="{base_y + 17}" text-anchor="middle">'
                f"{escape(_short(category))}</text>"
            )
    if chart.kind == LINE:
        parts.extend(_lines(chart, slot, y_of))
    else:
        parts.extend(_bars(chart, slot, y_of, base_y))
    parts.append(
        f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{base_y}" y2="{base_y}"/>'
    )
    parts.extend(_legend(chart, legend_rows, top=base_y + X_LABELS))
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text above is escaped


def _short(label: str, limit: int = 14) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _describe(chart: ChartData) -> str:
    if chart.is_empty:
        return "No data in this period."
    return "; ".join(
        f"{s.name}: "
        + ", ".join(
            f"{c} {_fmt(v, chart.unit)}" for c, v in zip(chart.categories, s.values, strict=True)
        )
        for s in chart.series
    )[:1000]


def _bars(chart: ChartData, slot: float, y_of, base_y: float) -> list[str]:
    parts = []
    per_bar = 1 if chart.kind == STACKED else max(len(chart.series), 1)
    inner = min(slot * 0.7, MAX_BAR * per_bar)
    for i, category in enumerate(chart.categories):
        x0 = LEFT + slot * i + (slot - inner) / 2
        stacked_at = 0.0
        for j, series in enumerate(chart.series):
            value = series.values[i]
            colour = PALETTE[j % len(PALETTE)]
            if chart.kind == STACKED:
                x, w = x0, inner
                y_top, y_bottom = y_of(stacked_at + value), y_of(stacked_at)
                stacked_at += value
            else:
                w = inner / len(chart.series)
                x = x0 + w * j
                y_top, y_bottom = y_of(value), base_y
            height = max(y_bottom - y_top, 0)
            if value:
                parts.append(
                    f'<rect x="{x:.1f}" y="{y_top:.1f}" width="{max(w - 1, 1):.1f}" '
                    f'height="{height:.1f}" fill="{colour}"><title>'
                    f"{escape(category)} · {escape(series.name)}: "
                    f"{escape(_fmt(value, chart.unit))}</title></rect>"
                )
    return parts


def _lines(chart: ChartData, slot: float, y_of) -> list[str]:
    parts = []
    for j, series in enumerate(chart.series):
        colour = PALETTE[j % len(PALETTE)]
        points = [(LEFT + slot * (i + 0.5), y_of(v)) for i, v in enumerate(series.values)]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        for (x, y), category, value in zip(points, chart.categories, series.values, strict=True):
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"><title>'
                f"{escape(category)} · {escape(series.name)}: "
                f"{escape(_fmt(value, chart.unit))}</title></circle>"
            )
    return parts


def _legend_layout(chart: ChartData) -> list[tuple[int, int]]:
    """(row, x) of each series' legend entry, wrapping to a new row when one is full."""
    layout, row, x = [], 0, LEFT
    for series in chart.series:
        width = 22 + 6.6 * len(series.name)
        if x > LEFT and x + width > WIDTH - RIGHT:
            row, x = row + 1, LEFT
        layout.append((row, x))
        x += width + 12
    return layout


def _legend(chart: ChartData, layout: list[tuple[int, int]], *, top: float) -> list[str]:
    parts = []
    for j, (series, (row, x)) in enumerate(zip(chart.series, layout, strict=True)):
        colour = PALETTE[j % len(PALETTE)]
        y = top + LEGEND_ROW * row + 10
        parts.append(
            f'<rect x="{x:.0f}" y="{y - 10:.0f}" width="11" height="11" rx="2" fill="{colour}"/>'
            f'<text class="legend" x="{x + 16:.0f}" y="{y:.0f}">{escape(series.name)}</text>'
        )
    return parts
