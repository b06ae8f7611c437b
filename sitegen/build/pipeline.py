"""The build pipeline: plan, then data → networks → comparisons and diffs → build record → site.

Planning comes first and does no work: the device, the architectures, then every name in the spec
checked against the built-but-untrained models and the output folder (all problems at once). Then
each dataset is loaded and its card written, each network's entries computed or found cached
(:mod:`.network`), the cross-network comparisons and the spec's diffs computed, ``build.json``
written, and the site rendered.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from sitegen import __version__
from sitegen._distributed import init_from_env
from sitegen.build.dataset import _write_dataset
from sitegen.build.devices import _check_archs, resolve_device
from sitegen.build.network import _build_network
from sitegen.build.sprites import Progress
from sitegen.compare import write_compares
from sitegen.data import DataBundle, build_data
from sitegen.diff import DiffSide, file_diff
from sitegen.errors import StoreError
from sitegen.plan import check_spec_against_models
from sitegen.spec import Spec
from sitegen.store import Store
from sitegen.store.manifest import BuildRecord, DiffRef, created_now

log = logging.getLogger("sitegen")


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What a build did: where things are, how long it took, how much was cached."""

    store: Path
    site: Path | None
    seconds: float
    computed: int
    cached: int

    @property
    def summary(self) -> str:
        return f"{self.computed} checkpoint(s) computed, {self.cached} cached"


def build(spec: Spec, *, progress: Progress | None = None, render: bool = True) -> BuildResult:
    """Build everything ``spec`` describes into ``spec.output`` (store/ and site/).

    Args:
        spec: a validated spec (:func:`sitegen.spec.load_spec`).
        progress: called as ``progress(label, done, total)`` during long work.
        render: also render the site (``output/site``) at the end.

    Returns:
        A :class:`BuildResult`.
    """
    t0 = time.perf_counter()
    report = progress or (lambda *_: None)
    device = _plan(spec)
    # Under torchrun every rank mines its shard of the probe set; rank 0 alone trains, analyses,
    # writes the store and renders (DESIGN.md, "Beyond one machine").
    rank, _ = init_from_env(device)
    lead = rank == 0
    store = Store(spec.output / "store")
    timings: dict[str, float] = {}

    bundles = _gather_data(spec, store, timings, lead=lead)
    computed = cached = 0
    for net_name, net in spec.networks.items():
        t = time.perf_counter()
        c, k = _build_network(spec, store, net_name, net, bundles[net.dataset], device, report, lead=lead)
        computed, cached = computed + c, cached + k
        timings[f"network {net_name}"] = time.perf_counter() - t

    if not lead:
        return BuildResult(store.root, None, time.perf_counter() - t0, computed, cached)
    t = time.perf_counter()
    write_compares(store, list(spec.networks))  # cross-network CKA (issue 15): needs every entry
    timings["compare"] = time.perf_counter() - t
    t = time.perf_counter()
    diffs = _build_diffs(spec, store)
    timings["diffs"] = time.perf_counter() - t
    store.write_build(
        BuildRecord(
            title=spec.title,
            spec_hash=spec.spec_hash(),
            created=created_now(),
            sitegen_version=__version__,
            torch_version=torch.__version__,
            device=str(device),
            timings={k: round(v, 3) for k, v in timings.items()},
            datasets=list(bundles),
            networks=list(spec.networks),
            diffs=diffs,
        )
    )
    site = _render(spec, store, report) if render else None
    return BuildResult(store.root, site, time.perf_counter() - t0, computed, cached)


def _plan(spec: Spec) -> torch.device:
    """Planning, before any data is loaded, trained or mined: the device, the architectures, then
    every name in the spec and the output folder (:func:`check_spec_against_models`, all problems)."""
    device = resolve_device(spec)
    _check_archs(spec)
    check_spec_against_models(spec)  # every name, the output folder: all problems before any work
    return device


def _gather_data(spec: Spec, store: Store, timings: dict[str, float], *, lead: bool) -> dict[str, DataBundle]:
    """Every dataset a network uses, in first-use order; rank 0 writes each one's card."""
    used = list(dict.fromkeys(net.dataset for net in spec.networks.values()))
    bundles: dict[str, DataBundle] = {}
    for name in used:
        t = time.perf_counter()
        bundles[name] = build_data(name, spec.datasets[name], spec.seed, cache_dir=spec.output / "cache")
        if lead:
            _write_dataset(store, bundles[name], spec)
        timings[f"data {name}"] = time.perf_counter() - t
    return bundles


def _build_diffs(spec: Spec, store: Store) -> list[DiffRef]:
    """The spec's diffs (cheap numpy over the store, recomputed every build), plus diffs filed
    earlier by ``sitegen diff`` whose files still exist."""
    refs: list[DiffRef] = []
    for d in spec.diffs:
        a = DiffSide(store.root, *d.a.split("@", 1))
        b = DiffSide(store.root, *d.b.split("@", 1))
        ref, _ = file_diff(store, a, b)
        refs.append(ref)
        log.info("diff %s: computed", ref.name)
    if (store.root / "build.json").is_file():
        try:
            previous = store.read_build().diffs
        except StoreError:
            previous = []
        names = {r.name for r in refs}
        refs += [
            r
            for r in previous
            if r.name not in names and (store.root / "diffs" / r.name / "diff.json").is_file()
        ]
    return refs


def _render(spec: Spec, store: Store, report: Progress) -> Path:
    """The site (``output/site``) and the output's redirect page; logs the size summary."""
    from sitegen.render import render_site
    from sitegen.render.sizes import site_sizes, size_report

    site = spec.output / "site"
    render_site(store.root, site, progress=lambda d, n: report("render", d, n))
    _write_redirect(spec.output)
    lines, warnings = size_report(site_sizes(site, list(spec.networks)))
    for line in lines:
        log.info("%s", line)
    for warning in warnings:
        log.warning("%s", warning)
    return site


def _write_redirect(output: Path) -> None:
    """``output/index.html`` → ``site/index.html``, so "open output/index.html" works too."""
    (output / "index.html").write_text(
        '<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="0; url=site/index.html">'
        '<title>sitegen atlas</title><a href="site/index.html">Open the atlas</a>\n',
        encoding="utf-8",
    )
