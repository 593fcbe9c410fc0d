"""Small inline SVG charts and humane texts for the HTML report: no script, no network, no library.

Every drawn point carries its exact figure and time in a ``<title>`` (shown on hover) and in
``data-`` attributes (read by tests); an empty chart is a sentence saying why it is empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

from markupsafe import Markup

from reconciler.units import human_bytes

WIDTH, HEIGHT = 640, 190
LEFT, RIGHT, TOP, BOTTOM = 78, 12, 10, 28
COLOURS = ("#0969da", "#1a7f37", "#9a6700", "#8250df", "#cf222e", "#1b7c83", "#bf3989", "#57606a")


def plural(count: Any, singular: str, plural_form: str | None = None) -> str:
    """``1 file``, ``1,204 files``: the count with thousands separators and the right form."""
    number = int(count or 0)
    return f"{number:,} {singular if number == 1 else (plural_form or singular + 's')}"


def exact(moment: datetime) -> str:
    """The exact time as the CLI prints it: ``2026-11-30 13:45:12 UTC``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _moment(value: datetime | str | None) -> datetime | None:
    if value is None or value == "":
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def humanise(moment: datetime, now: datetime) -> str:
    """``just now``, ``5 minutes ago``, ``3 hours ago``, ``2 days ago``, ``in 4 hours``, or the date
    when it is months away."""
    seconds = (now - moment).total_seconds()
    ahead = seconds < 0
    seconds = abs(seconds)
    if seconds < 60:
        return "just now"
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size or unit == "minute":
            count = int(seconds // size)
            if unit == "day" and count > 60:
                return f"on {moment.astimezone(UTC):%Y-%m-%d}"
            text = plural(count, unit)
            return f"in {text}" if ahead else f"{text} ago"
    raise AssertionError("unreachable")


def when(value: datetime | str | None, now: datetime, never: str = "never") -> Markup:
    """A ``<time>`` element: humanised, with the exact time on hover."""
    moment = _moment(value)
    if moment is None:
        return Markup(escape(never))
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        moment.astimezone(UTC).isoformat(timespec="seconds"), exact(moment), humanise(moment, now))


def _value_text(value: float, unit: str) -> str:
    return human_bytes(int(value)) if unit == "bytes" else f"{int(value):,}"


def _empty(key: str, message: str) -> Markup:
    return Markup('<p class="muted chart-empty" data-chart="{}" data-empty="true">{}</p>').format(key, message)


def _x_scale(times: Sequence[datetime]) -> tuple[datetime, float]:
    start, end = min(times), max(times)
    if end - start < timedelta(seconds=1):  # one moment: in the middle of an hour
        start, end = start - timedelta(minutes=30), end + timedelta(minutes=30)
    margin = (end - start) * 0.03  # no point on the frame
    start, end = start - margin, end + margin
    span = (end - start).total_seconds()
    return start, span


def _axis_label(moment: datetime, start: datetime, end: datetime) -> str:
    """Enough of the time to tell the two ends apart (the exact time is its title)."""
    moment = moment.astimezone(UTC)
    if end - start < timedelta(hours=1):
        return f"{moment:%H:%M:%S}"
    return f"{moment:%H:%M}" if end - start < timedelta(days=2) else f"{moment:%Y-%m-%d}"


def line_chart(series: dict[str, list[tuple[datetime, float]]], unit: str, key: str, empty: str,
               now: datetime) -> Markup:
    """One line per address (``series``: address -> (time, value), oldest first), on a shared time
    axis from the first to the last measurement and a value axis from 0; ``unit`` "bytes" shows
    values as KiB/MiB/GiB, anything else as counts. No measurements: the ``empty`` sentence."""
    drawn = {address: points for address, points in series.items() if points}
    if not drawn:
        return _empty(key, empty)
    times = [moment for points in drawn.values() for moment, _ in points]
    start, span = _x_scale(times)
    highest = max(value for points in drawn.values() for _, value in points)
    top = (highest or 1.0) * 1.08
    inner_width, inner_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(moment: datetime) -> float:
        return LEFT + inner_width * (moment - start).total_seconds() / span

    def y(value: float) -> float:
        return TOP + inner_height * (1 - value / top)

    parts = [Markup('<svg class="chart" data-chart="{}" data-series="{}" viewBox="0 0 {} {}" width="{}" height="{}" '
                    'role="img" aria-label="{}">').format(key, len(drawn), WIDTH, HEIGHT, WIDTH, HEIGHT, key)]
    for fraction in (0.0, 0.5, 1.0) if highest else (0.0,):
        level = highest * fraction
        parts.append(Markup('<line class="grid" x1="{}" x2="{}" y1="{:.1f}" y2="{:.1f}"/>'
                            '<text class="axis" x="{}" y="{:.1f}" text-anchor="end">{}</text>').format(
            LEFT, WIDTH - RIGHT, y(level), y(level), LEFT - 6, y(level) + 4, _value_text(level, unit)))
    first, last = min(times), max(times)
    parts.append(Markup('<text class="axis" x="{}" y="{}" text-anchor="start"><title>{}</title>{}</text>'
                        '<text class="axis" x="{}" y="{}" text-anchor="end"><title>{}</title>{}</text>').format(
        LEFT, HEIGHT - 8, exact(first), _axis_label(first, first, last),
        WIDTH - RIGHT, HEIGHT - 8, exact(last), _axis_label(last, first, last)))
    legend = []
    for index, (address, points) in enumerate(drawn.items()):
        colour = COLOURS[index % len(COLOURS)]
        coordinates = " ".join(f"{x(moment):.1f},{y(value):.1f}" for moment, value in points)
        parts.append(Markup('<g class="series" data-address="{}">').format(address))
        if len(points) > 1:
            parts.append(Markup('<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>').format(
                colour, coordinates))
        for moment, value in points:
            parts.append(Markup('<circle cx="{:.1f}" cy="{:.1f}" r="3" fill="{}" data-value="{}" data-time="{}">'
                                '<title>{}: {}, measured {} ({})</title></circle>').format(
                x(moment), y(value), colour, int(value), moment.isoformat(timespec="seconds"),
                address, _value_text(value, unit), exact(moment), humanise(moment, now)))
        parts.append(Markup("</g>"))
        latest_moment, latest = points[-1]
        legend.append(Markup('<li><span class="swatch" style="background: {}"></span><code>{}</code> {} '
                             '<span class="muted">({})</span></li>').format(
            colour, address, _value_text(latest, unit), when(latest_moment, now)))
    parts.append(Markup("</svg>"))
    return Markup("").join(parts) + Markup('<ul class="legend">{}</ul>').format(Markup("").join(legend))


def timeline_chart(points: list[dict[str, Any]], key: str, empty: str, now: datetime,
                   labels: tuple[str, str] = ("kept", "dropped")) -> Markup:
    """Things a policy keeps or drops, on a time axis (e.g. backups and their retention):
    ``points`` with ``time``, ``name``, ``kept`` and ``why`` (the rules keeping it, or why it
    goes); kept ones filled on the upper line, the others hollow on the lower one (``labels``)."""
    if not points:
        return _empty(key, empty)
    height = 64
    times = [point["time"] for point in points]
    start, span = _x_scale(times)
    inner_width = WIDTH - LEFT - RIGHT
    parts = [Markup('<svg class="chart timeline" data-chart="{}" data-points="{}" viewBox="0 0 {} {}" width="{}" '
                    'height="{}" role="img" aria-label="{}">').format(key, len(points), WIDTH, height, WIDTH, height,
                                                                      key),
             Markup('<line class="grid" x1="{}" x2="{}" y1="24" y2="24"/>').format(LEFT, WIDTH - RIGHT),
             Markup('<text class="axis" x="{}" y="28" text-anchor="end">{}</text>'
                    '<text class="axis" x="{}" y="50" text-anchor="end">{}</text>').format(
                 LEFT - 6, labels[0], LEFT - 6, labels[1])]
    for point in points:
        moment = point["time"]
        cx = LEFT + inner_width * (moment - start).total_seconds() / span
        kept = bool(point["kept"])
        parts.append(Markup('<circle class="{}" cx="{:.1f}" cy="{}" r="5" data-kept="{}" data-name="{}" data-why="{}">'
                            '<title>{}, {} ({}): {}</title></circle>').format(
            "kept" if kept else "pruned", cx, 24 if kept else 46, "yes" if kept else "no", point["name"],
            point["why"], point["name"], exact(moment), humanise(moment, now),
            ("kept: " if kept else "") + point["why"]))
    first, last = min(times), max(times)
    parts.append(Markup('<text class="axis" x="{}" y="62"><title>{}</title>{}</text>'
                        '<text class="axis" x="{}" y="62" text-anchor="end"><title>{}</title>{}</text>').format(
        LEFT, exact(first), _axis_label(first, first, last),
        WIDTH - RIGHT, exact(last), _axis_label(last, first, last)))
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)
