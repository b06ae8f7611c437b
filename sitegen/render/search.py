"""The site's search index (issue 15, item 8): a compact script that search.js loads on first use.

The index is collected from the planned pages themselves (:class:`sitegen.render.views.SitePlan`):
network, layer and unit pages, their tiles (each shown unit's dominant class and purity), the layer
pages' activation-distribution section (dead and rarely firing units) and every other page (diffs,
comparisons, feature evolution, class pages) by title. It reads no store file and computes nothing
beyond collecting names and flags, so it always agrees with the pages it links to.

It is written as ``assets/search-index.js``, a script that assigns the index to
``window.SITEGEN_SEARCH``: ``fetch()`` of a JSON file fails under ``file://`` in Chromium, a script
element does not. Rows are arrays, not objects (the index of a seed-scale atlas holds ~10,000 units),
and every ``href`` is a site path; search.js prefixes the page's root (``../../``), so the links work
from ``file://``, at ``/`` and under a GitHub Pages sub-path. The layout, by key (docs/INTERNALS.md,
"The search index"):

``datasets``  ``[name, [class name…], [class page or ""…]]``
``nets``      ``[name, dataset index]``
``cks``       ``[net index, checkpoint name, network page, 1 if the stable (last atlas) checkpoint]``
``layers``    ``[checkpoint index, name, first layer page, units, dominant, purity, dead, rare, output]``:
              ``units`` the shown units (an int ``n`` for ``0..n-1``), each with a page
              ``<layer folder>/unit-0007.html``; ``dominant`` their dominant class indices; ``purity``
              their purity in whole percent; ``dead`` and ``rare`` every flagged unit of the layer
              (shown or not), ``null`` where density is undefined or not computed; ``output`` 1 when
              unit ``i`` is class ``i``
``pages``     ``[kind, title, href]``: every other page but the index, 404 and class pages (kind: the
              template's name)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sitegen.render.views import Page

__all__ = ["INDEX_PATH", "FORMAT", "search_index", "search_script"]

INDEX_PATH = "assets/search-index.js"
FORMAT = 1
GLOBAL = "SITEGEN_SEARCH"

# Pages the index lists by its own rows (or not at all): the rest go to ``pages`` by title.
_OWN = frozenset({"network.html", "layer.html", "unit.html", "index.html", "404.html"})


@dataclass
class _Layer:
    ck: int
    name: str
    href: str = ""
    units: dict[int, tuple[int, int]] = field(default_factory=dict)  # unit -> (dominant, purity %)
    dead: list[int] | None = None
    rare: list[int] | None = None
    output: bool = False


def _folder(path: str) -> str:
    return path.rpartition("/")[0] + "/"


def _parent(folder: str) -> str:
    return folder[:-1].rpartition("/")[0] + "/"


def _distribution(sections: Sequence[Any]) -> tuple[list[int] | None, list[int] | None]:
    """Dead and rarely firing units from a layer page's distribution section (``None``: no density)."""
    for s in sections:
        if s.kind == "distribution" and s.view is not None and s.view.figure is not None:
            return [u.unit for u in s.view.dead], [u.unit for u in s.view.rare]
    return None, None


def _class_page(page: Page) -> tuple[str, int] | None:
    """(dataset, class index) of a class page (``classes/<dataset>/<class>.html``), else None."""
    if not page.path.startswith("classes/"):
        return None
    ctx = page.context
    chip, dataset = ctx.get("chip"), ctx.get("dataset")
    index = getattr(chip, "index", None)
    return (dataset, int(index)) if isinstance(dataset, str) and index is not None else None


def _units(units: Sequence[int]) -> int | list[int]:
    return len(units) if list(units) == list(range(len(units))) else list(units)


def search_index(pages: Sequence[Page]) -> dict[str, Any]:
    """The search index of a planned site.

    Args:
        pages: every page of the site (:attr:`sitegen.render.views.SitePlan.pages`).

    Returns:
        The index as plain JSON values, laid out as the module docstring says.

    Example:
        >>> index = search_index(plan_site(Store(root)).pages)
        >>> index["layers"][0][1]
        'conv1'
    """
    datasets: dict[str, list[str]] = {}
    for page in pages:  # the index page's dataset cards list every class
        if page.template == "index.html":
            for card in page.context.get("datasets", ()):
                datasets[card.name] = [p.chip.name for p in card.classes]
    class_pages = {name: [""] * len(names) for name, names in datasets.items()}
    nets, cks, ck_rows, others = _checkpoints(pages, list(datasets), class_pages)
    return {
        "format": FORMAT,
        "datasets": [[name, names, class_pages[name]] for name, names in datasets.items()],
        "nets": [[name, ds] for name, ds in nets.items()],
        "cks": ck_rows,
        "layers": _layers(pages, cks),
        "pages": others,
    }


def _checkpoints(
    pages: Sequence[Page], datasets: list[str], class_pages: dict[str, list[str]]
) -> tuple[dict[str, int], dict[str, int], list[list[Any]], list[list[Any]]]:
    """Networks (name -> dataset index), checkpoints (site folder -> row) and their rows from the
    network pages; class pages into ``class_pages``; every other page but the index and 404."""
    nets: dict[str, int] = {}
    cks: dict[str, int] = {}
    ck_rows: list[list[Any]] = []
    others: list[list[Any]] = []
    for page in pages:
        ctx = page.context
        if page.template == "network.html":
            net = str(ctx["net"])
            ds = str(ctx.get("dataset", ""))
            nets.setdefault(net, datasets.index(ds) if ds in datasets else -1)
            cks[_folder(page.path)] = len(ck_rows)
            stable = page.path.count("/") == 1  # <net>/index.html, not <net>/@<checkpoint>/index.html
            ck_rows.append([list(nets).index(net), str(ctx["checkpoint"]), page.path, int(stable)])
        elif page.template not in _OWN:
            cls = _class_page(page)
            if cls is not None and cls[0] in class_pages and cls[1] < len(class_pages[cls[0]]):
                class_pages[cls[0]][cls[1]] = page.path  # listed with its class, not by title
                continue
            others.append([page.template.removesuffix(".html"), str(ctx.get("title", "")), page.path])
    return nets, cks, ck_rows, others


def _layers(pages: Sequence[Page], cks: dict[str, int]) -> list[list[Any]]:
    """Layer rows from the layer pages (every page's tiles, the first page's sections) and unit pages."""
    layers: dict[str, _Layer] = {}  # layer folder -> layer
    for page in pages:
        ctx = page.context
        if page.template not in ("layer.html", "unit.html"):
            continue
        folder = _folder(page.path)
        ck = cks.get(_parent(folder))
        if ck is None:
            continue
        lay = layers.setdefault(folder, _Layer(ck, str(ctx["layer"])))
        if page.template == "unit.html":
            lay.output = lay.output or ctx.get("out_class") is not None
            continue
        if page.path == f"{folder}index.html":
            lay.href = page.path
            lay.dead, lay.rare = _distribution(ctx.get("sections", ()))
        for t in ctx.get("tiles", ()):
            lay.units[int(t.unit)] = (int(t.chip.index), round(float(t.purity) * 100))
    rows = []
    for lay in layers.values():
        order = sorted(lay.units)
        dominant = [lay.units[u][0] for u in order]
        purity = [lay.units[u][1] for u in order]
        rows.append(
            [lay.ck, lay.name, lay.href, _units(order), dominant, purity, lay.dead, lay.rare, int(lay.output)]
        )
    return rows


def search_script(pages: Sequence[Page]) -> str:
    """``assets/search-index.js``: the index of :func:`search_index` assigned to ``window.SITEGEN_SEARCH``.

    Args:
        pages: every page of the site.

    Returns:
        The script's text (UTF-8, one line).
    """
    text = json.dumps(search_index(pages), ensure_ascii=False, separators=(",", ":"))
    # JSON allows U+2028/U+2029 in strings, older JavaScript engines do not.
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return f"window.{GLOBAL}={text};\n"
