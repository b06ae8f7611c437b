"""What render adds to the copied ``templates/assets`` files, once per site (issue 13, item 4: site size).

Unit pages repeated, on every chip and bar, the class colour inline (``style="--c:#8DB600"``) and, in
every figure, a layout shared by all of them. Both now live once in the site's assets:

- ``assets/style.css`` ends with one rule per class, ``.c7{--c:<charts.class_color(7)>}``, for the
  most classes of any dataset of the site (chips and bars carry ``class="chip c7"``).
- ``assets/app.js`` starts with ``window.SITEGEN_LAYOUTS={…};``, the shared figure layouts
  (:mod:`sitegen.render.charts.shared`), which its ``figureFor`` merges into each figure.
"""

from __future__ import annotations

from sitegen.render import charts
from sitegen.render._models import class_css
from sitegen.render.views import SitePlan

__all__ = ["class_rules", "site_assets"]


def class_rules(n: int) -> str:
    """One CSS rule per class ``0..n-1`` setting ``--c``, the colour chips and bars are drawn in."""
    rules = "".join(f".{class_css(i)}{{--c:{charts.class_color(i)}}}" for i in range(n))
    return f"/* class colours (sitegen render) */\n{rules}\n" if rules else ""


def site_assets(plan: SitePlan) -> dict[str, tuple[bytes, bytes]]:
    """Asset file name -> (bytes before, bytes after) its copy from ``templates/assets``."""
    return {
        "app.js": (charts.layouts_script().encode("utf-8"), b""),
        "style.css": (b"", ("\n" + class_rules(plan.classes)).encode("utf-8") if plan.classes else b""),
    }
