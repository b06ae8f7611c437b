"""Store → frozen view models of plain values: one :class:`Page` per HTML file, plus the files they show.

:func:`plan_site` reads the store once (records, npz arrays, actmaps.json) and returns a
:class:`SitePlan`: every page's template and context, and every store file a page references
(probe images, sprites, filter grids, activation maps) with the site path it is copied to. Templates
then only loop and branch; all numbers are formatted here and every URL is a site path that the
``url`` filter makes page-relative.

Site layout (also in docs/INTERNALS.md, "The site layout"):

```
index.html                     networks, comparisons, diffs, datasets; the build closes it
404.html                       GitHub Pages' answer to any missing URL: self-contained (inline
                               style), its script finds the atlas root (templates/404.html)
compare/<dataset>.html         networks of one dataset side by side
img/<dataset>/<idx>.png        probe images (only those a page shows)
<net>/index.html               network page of the LAST atlas checkpoint (stable URLs)
<net>/<layer>/index.html       layer page (units 1-256), page-2.html … for more units
<net>/<layer>/unit-0007.html   unit page; its sprite unit-0007.webp beside it
<net>/filters.png, <net>/actmaps/…
<net>/@<checkpoint>/…          the same tree for every other atlas checkpoint
<net>/evolution/index.html     feature evolution: stability curves (>= 2 checkpoints with store entries)
<net>/evolution/<layer>.html   rank-1 patch + reconstruction of sampled units at every checkpoint
diff/<name>/index.html         a diff of two checkpoints (build.json `diffs`, :mod:`sitegen.diff`)
```

The package: :mod:`.models` (the view models), :mod:`.urls` (slugs), :mod:`.fmt` (number and date
formats), :mod:`.sprites` (sprite cells as CSS), :mod:`.context` (the planner's shared state),
:mod:`.pieces` (parts several pages show), one planner module per page kind (:mod:`.network`,
:mod:`.actmaps`, :mod:`.layer`, :mod:`.unit`, :mod:`.compare`, :mod:`.diff`, :mod:`.evolution`,
:mod:`.index`; class pages are :mod:`sitegen.render.classes`), and :mod:`.plan`, which runs them.
"""

from __future__ import annotations

from sitegen.render.views.actmaps import ACTMAPS_FORMAT
from sitegen.render.views.diff import DIFF_UNITS
from sitegen.render.views.models import (
    FULL,
    MAP,
    SAMPLE,
    THUMB,
    TINY,
    ActChannel,
    ActImage,
    ActLayer,
    Bar,
    BiasRow,
    Box,
    Chrome,
    ClassPick,
    ClassShift,
    CompareColumn,
    DatasetCard,
    DiffLayerRow,
    DiffSection,
    EvoCell,
    EvoColumn,
    EvoLayerRow,
    EvoRow,
    Fact,
    LayerRow,
    Link,
    NetworkCard,
    Page,
    SitePlan,
    SpriteCell,
    SpriteView,
    TopEntry,
    UnitChange,
    UnitTile,
)
from sitegen.render.views.plan import plan_site
from sitegen.render.views.unit import UNITS_PER_PAGE
from sitegen.render.views.urls import slug

__all__ = [
    "ACTMAPS_FORMAT",
    "ActChannel",
    "ActImage",
    "ActLayer",
    "Bar",
    "BiasRow",
    "Box",
    "Chrome",
    "ClassPick",
    "ClassShift",
    "CompareColumn",
    "DIFF_UNITS",
    "DatasetCard",
    "DiffLayerRow",
    "DiffSection",
    "EvoCell",
    "EvoColumn",
    "EvoLayerRow",
    "EvoRow",
    "FULL",
    "Fact",
    "LayerRow",
    "Link",
    "MAP",
    "NetworkCard",
    "Page",
    "SAMPLE",
    "SitePlan",
    "SpriteCell",
    "SpriteView",
    "THUMB",
    "TINY",
    "TopEntry",
    "UNITS_PER_PAGE",
    "UnitChange",
    "UnitTile",
    "plan_site",
    "slug",
]
