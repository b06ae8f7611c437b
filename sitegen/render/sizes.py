"""How big a rendered site is, per network and layer, against where it will be published.

GitHub Pages refuses sites over 1 GB (and warns on files over 50 MB): a lab finds out at deploy time,
after a build of an hour. ``sitegen build`` prints this summary instead and warns, naming what to
turn off, before that happens (issue 13).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PAGES_LIMIT", "SiteSizes", "site_sizes", "size_report"]

#: GitHub Pages' published-site limit (docs.github.com, "GitHub Pages limits").
PAGES_LIMIT = 1_000_000_000
#: GitHub warns from 50 MB a file and refuses 100 MB.
FILE_WARN = 50_000_000


@dataclass(frozen=True, slots=True)
class SiteSizes:
    """Bytes of a site folder.

    Attributes:
        total: every file.
        files: number of files.
        networks: per network folder, its bytes and, per layer folder under it, theirs.
        largest: the largest file and its size.
    """

    total: int
    files: int
    networks: dict[str, tuple[int, dict[str, int]]]
    largest: tuple[str, int]


def site_sizes(site: Path, networks: list[str]) -> SiteSizes:
    """Walk ``site`` once; ``networks`` are the network folders to break down (others count in total)."""
    total = files = 0
    largest = ("", 0)
    per_net: dict[str, tuple[int, dict[str, int]]] = {}
    for dirpath, _, filenames in os.walk(site):
        rel = Path(dirpath).relative_to(site).parts
        size = 0
        for f in filenames:
            n = os.path.getsize(os.path.join(dirpath, f))
            size += n
            if n > largest[1]:
                largest = ("/".join((*rel, f)), n)
        total += size
        files += len(filenames)
        if rel and rel[0] in networks:
            net_total, layers = per_net.setdefault(rel[0], (0, {}))
            if len(rel) >= 2:
                layers[rel[1]] = layers.get(rel[1], 0) + size
            per_net[rel[0]] = (net_total + size, layers)
    ordered = {net: per_net[net] for net in networks if net in per_net}  # the spec's order
    return SiteSizes(total=total, files=files, networks=ordered, largest=largest)


def size_report(sizes: SiteSizes, *, top: int = 4) -> tuple[list[str], list[str]]:
    """Summary lines and warnings: the site, each network with its ``top`` largest layers.

    Returns:
        ``(lines, warnings)``; a warning says what to turn off when the site passes GitHub Pages'
        limit or a file its per-file warning.
    """
    lines = [f"site: {_mb(sizes.total)} in {sizes.files:,} files"]
    for net, (net_bytes, layers) in sizes.networks.items():
        biggest = sorted(layers.items(), key=lambda kv: -kv[1])[:top]
        parts = ", ".join(f"{name} {_mb(n)}" for name, n in biggest)
        lines.append(f"  {net}: {_mb(net_bytes)}" + (f" (largest: {parts})" if parts else ""))
    warnings = []
    if sizes.total > PAGES_LIMIT:
        worst = max(
            ((net, name, n) for net, (_, layers) in sizes.networks.items() for name, n in layers.items()),
            key=lambda t: t[2],
            default=None,
        )
        hint = (
            f"e.g. networks.{worst[0]}.units: {{{worst[1]}: 256}} samples that layer's unit pages"
            if worst
            else "sample wide layers with networks.<net>.units"
        )
        warnings.append(
            f"the site is {_mb(sizes.total)}, over GitHub Pages' 1 GB limit: {hint}; drop reconstruction "
            "methods (analyses.reconstructions.methods) or evolution: false to shrink it"
        )
    if sizes.largest[1] > FILE_WARN:
        warnings.append(
            f"{sizes.largest[0]} is {_mb(sizes.largest[1])}: "
            "GitHub warns from 50 MB a file and refuses 100 MB"
        )
    return lines, warnings


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"
