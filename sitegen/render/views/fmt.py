"""How the pages write numbers, dates and shapes: every value a template shows is a string from here."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime


def count(n: int) -> str:
    """A large count, shortened: ``1.23 M``, ``12.3 k``, ``9,999``."""
    if n >= 1_000_000:
        return f"{n / 1e6:.2f} M"
    if n >= 10_000:
        return f"{n / 1e3:.1f} k"
    return f"{n:,}"


def pct(x: float | None) -> str:
    """A share as a percentage (``88.0%``); ``–`` for an unknown one."""
    return "–" if x is None else f"{x * 100:.1f}%"


def seconds(s: float) -> str:
    """A duration: ``4.2 s``, ``42 s``, ``3 min 05 s``."""
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    m, sec = divmod(round(s), 60)
    return f"{m} min {sec:02d} s"


def date(iso: str) -> str:
    """An ISO timestamp to the minute, with its zone when it has one (unparsable: as given)."""
    try:
        d = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    zone = d.strftime(" %Z") if d.tzinfo else ""
    return d.strftime("%Y-%m-%d %H:%M") + zone


def value(v: float) -> str:
    """An activation: three significant digits, or a whole number with separators from 1000."""
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def shape(shape: Sequence[int]) -> str:
    """A tensor shape: ``64×27×27``."""
    return "×".join(str(s) for s in shape)


def signed(x: float, digits: int = 1, unit: str = " pp") -> str:
    """``+2.5 pp``, ``−1.4 pp`` (a real minus sign), ``0.0 pp`` (no sign when it rounds to zero)."""
    if round(x, digits) == 0:
        return f"{0:.{digits}f}{unit}"
    return f"{x:+.{digits}f}{unit}".replace("-", "−")
