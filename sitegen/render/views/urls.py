"""The site's URL scheme: slugs of user names, unique within a folder, and the names they may not take.

Every page path is a site path ("tiny-alex/conv1/unit-0007.html"); :func:`page_root` is the way back
to the site root from one, which the ``url`` filter uses to make links page-relative.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# Names a network (at the top) or a layer (inside a network) may not take: site files live there.
RESERVED_TOP = frozenset({"index.html", "assets", "img", "compare", "diff", "classes"})
RESERVED_NET = frozenset({"index.html", "filters.png", "actmaps", "evolution", "gradcam"})
# Evolution pages are <net>/evolution/<layer>.html beside index.html.
RESERVED_EVO = frozenset({"index"})


def slug(name: str) -> str:
    """A URL- and file-safe form of a user name (network, dataset, layer, checkpoint)."""
    s = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")
    return s or "x"


def unique_slugs(names: Sequence[str], reserved: frozenset[str]) -> dict[str, str]:
    """Name -> its slug, unique case-insensitively (``-2``, ``-3`` … on a collision) and not ``reserved``."""
    out: dict[str, str] = {}
    taken = set(reserved)
    for name in names:
        base = slug(name)
        s, n = base, 1
        while s.lower() in taken:
            n += 1
            s = f"{base}-{n}"
        taken.add(s.lower())
        out[name] = s
    return out


def page_root(path: str) -> str:
    """The relative way from the page at site path ``path`` back to the site root ("../../")."""
    return "../" * path.count("/")
