"""The planner's shared state: the store, caches of what it read, and the pages and files planned so far.

One :class:`PlanContext` lives for one :func:`~sitegen.render.views.plan_site` call. The page
planners (one module per page kind) take it as their first argument: they load datasets,
checkpoints, manifests and probe images through it (each read once), add the store files their
pages show to :attr:`PlanContext.files` (site path → store path), and append pages with
:meth:`PlanContext.page`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sitegen.diff import DiffSide
from sitegen.errors import RenderError
from sitegen.render import charts
from sitegen.render._models import Chip, Img, class_css
from sitegen.render.sections import CheckpointSections
from sitegen.render.views.models import Chrome, Link, Page
from sitegen.render.views.urls import RESERVED_NET, page_root, slug, unique_slugs
from sitegen.store import CheckpointManifest, DatasetRecord, NetworkRecord, Store, codecs
from sitegen.store.manifest import CheckpointRef, SpriteLayout


@dataclass(frozen=True)
class LoadedDataset:
    """A dataset of the build, loaded: its record, slug, probe labels and one chip per class."""

    rec: DatasetRecord
    slug: str
    labels: list[int]
    chips: tuple[Chip, ...]


@dataclass(frozen=True)
class LoadedCheckpoint:
    """One atlas checkpoint of a network, loaded."""

    net: NetworkRecord
    name: str
    base: str  # site folder of its pages: "tiny-alex/" or "tiny-alex/@epoch-1/"
    manifest: CheckpointManifest
    mined: Mapping[str, np.ndarray]
    classes: Mapping[str, np.ndarray]
    layer_slugs: Mapping[str, str]
    dir: Path
    sections: CheckpointSections


def require_array(arrays: Mapping[str, np.ndarray], key: str, where: Path) -> np.ndarray:
    """``arrays[key]``, or a RenderError naming the npz file ``where`` it should have come from."""
    try:
        return arrays[key]
    except KeyError:
        raise RenderError(
            f"{where}: no array {key!r}; the store is incomplete, rerun `sitegen build`"
        ) from None


class PlanContext:
    """What every page planner shares (see the module docstring)."""

    # Set by plan_site once the build record is read, before any page is planned.
    chrome: Chrome
    net_slugs: dict[str, str]
    nets: dict[str, NetworkRecord]
    entries: dict[str, list[CheckpointRef]]  # checkpoints with a store entry, per network
    evo_slugs: dict[str, dict[str, str]]  # networks with feature evolution: layer -> page slug
    related: dict[str, tuple[Link, ...]]
    # Set once the atlas pages are planned (the diff and index pages use them).
    datasets: Mapping[str, LoadedDataset]
    class_lists: dict[str, str]

    def __init__(self, store: Store) -> None:
        self.store = store
        self.root = store.root.resolve()
        self.files: dict[str, Path] = {}
        self.pages: list[Page] = []
        self._imgs: dict[tuple[str, int, int], Img] = {}
        self._layouts: set[tuple[str, str, str, str]] = set()
        self._manifests: dict[tuple[str, str], CheckpointManifest] = {}
        self._mined: dict[tuple[str, str], Mapping[str, np.ndarray]] = {}

    # -- pages and URLs --
    def page(
        self, path: str, template: str, title: str, crumbs: Sequence[Link], plotly: bool, **context: Any
    ) -> None:
        """Plan the page at site path ``path``: its template and context (the chrome added)."""
        ctx = {
            "root": page_root(path),
            "here": path.rpartition("/")[0] + "/" if "/" in path else "",
            "site": self.chrome,
            "title": title,
            "crumbs": tuple(crumbs),
            "plotly": plotly,
            "path": path,
            **context,
        }
        self.pages.append(Page(path=path, template=template, context=ctx))

    @staticmethod
    def atlas(net: NetworkRecord) -> list[CheckpointRef]:
        """The network's atlas checkpoints (those with pages), in order."""
        return [c for c in net.checkpoints if c.atlas]

    def base(self, net: NetworkRecord, checkpoint: str) -> str:
        """Site folder of a checkpoint's pages: the last atlas checkpoint owns the stable URLs."""
        atlas = [c.name for c in self.atlas(net)]
        top = f"{self.net_slugs[net.name]}/"
        if checkpoint == atlas[-1]:
            return top
        return f"{top}@{unique_slugs(atlas, frozenset())[checkpoint]}/"

    def atlas_unit(self, network: str, checkpoint: str, layer: str) -> str:
        """Site folder of a layer's unit pages at ``checkpoint`` ("" when it has no atlas pages here)."""
        net = self.nets.get(network)
        if net is None or not any(c.name == checkpoint and c.atlas for c in net.checkpoints):
            return ""
        slugs = unique_slugs(self.manifest(network, checkpoint).layers, RESERVED_NET)
        return f"{self.base(net, checkpoint)}{slugs[layer]}/" if layer in slugs else ""

    def is_local(self, side: DiffSide) -> bool:
        """Whether a diff side is a network of this store (its pages can be linked)."""
        return side.network in self.nets and Path(side.store_root).resolve() == self.root

    # -- loading --
    def dataset(self, name: str) -> LoadedDataset:
        """Dataset ``name`` with its probe labels (checked against dataset.json) and class chips."""
        rec = self.store.read_dataset(name)
        path = self.store.dataset_dir(name) / "labels.npy"
        try:
            labels = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise RenderError(f"{path}: missing; the store is incomplete, rerun `sitegen build`") from None
        except (OSError, ValueError) as e:
            raise RenderError(f"{path}: unreadable ({e}); rerun `sitegen build`") from None
        if len(labels) != rec.n_probe:
            raise RenderError(f"{path}: {len(labels)} labels but dataset.json says n_probe={rec.n_probe}")
        from sitegen.render.classes import class_paths  # issue 15: every chip links its class page

        hrefs = class_paths(slug(name), rec.class_names)
        colors = [charts.class_color(i) for i in range(len(hrefs))]
        named = zip(rec.class_names, colors, hrefs, strict=True)
        chips = tuple(Chip(i, *ch, css=class_css(i)) for i, ch in enumerate(named))
        return LoadedDataset(rec=rec, slug=slug(name), labels=labels.tolist(), chips=chips)

    def checkpoint(self, net: NetworkRecord, name: str, base: str) -> LoadedCheckpoint:
        """Atlas checkpoint ``name`` of ``net``, its pages under site folder ``base``."""
        m = self.manifest(net.name, name)
        known = {lay.name for lay in net.layers}
        missing = [lay for lay in m.layers if lay not in known]
        if missing:
            raise RenderError(
                f"{self.store.network_dir(net.name)}/network.json: no layer(s) {missing} "
                f"that {name}/manifest.json lists; rerun `sitegen build`"
            )
        return LoadedCheckpoint(
            net=net,
            name=name,
            base=base,
            manifest=m,
            mined=self.mined_arrays(net.name, name),
            classes=self.store.read_arrays(net.name, name, "classes"),
            layer_slugs=unique_slugs(m.layers, RESERVED_NET),
            dir=self.store.checkpoint_dir(net.name, name),
            sections=CheckpointSections(
                self.store, net.name, name, m.techniques, base, self.files.__setitem__
            ),
        )

    def manifest(self, network: str, checkpoint: str) -> CheckpointManifest:
        """A checkpoint entry's manifest.json, read once."""
        key = (network, checkpoint)
        if key not in self._manifests:
            self._manifests[key] = self.store.read_manifest(network, checkpoint)
        return self._manifests[key]

    def mined_arrays(self, network: str, checkpoint: str) -> Mapping[str, np.ndarray]:
        """A checkpoint entry's mined.npz, read once."""
        key = (network, checkpoint)
        if key not in self._mined:
            self._mined[key] = self.store.read_arrays(network, checkpoint, "mined")
        return self._mined[key]

    def store_entries(self, net: NetworkRecord) -> list[CheckpointRef]:
        """Checkpoints with a complete store entry (manifest.json), in training order."""
        return [
            c
            for c in net.checkpoints
            if (self.store.checkpoint_dir(net.name, c.name) / "manifest.json").is_file()
        ]

    def image(self, ds: LoadedDataset, index: int, size: int) -> Img:
        """Probe image ``index`` shown at ``size`` CSS px (its file added to the site once)."""
        key = (ds.rec.name, index, size)
        img = self._imgs.get(key)
        if img is None:
            if not 0 <= index < len(ds.labels):
                raise RenderError(
                    f"{self.store.dataset_dir(ds.rec.name)}: probe image {index} out of range "
                    f"(n_probe={len(ds.labels)}); rerun `sitegen build`"
                )
            src = f"img/{ds.slug}/{index}.png"
            self.files[src] = self.store.image_path(ds.rec.name, index)
            cls = ds.rec.class_names[ds.labels[index]]
            img = Img(src, size, size, f"probe image {index} ({cls})")
            self._imgs[key] = img
        return img

    def sprite_layout(self, ck: LoadedCheckpoint, layer: str, units: Sequence[int]) -> SpriteLayout | None:
        """The checked sprite layout of a layer of an atlas checkpoint (None: no sprites)."""
        return self.checked_layout(self.store, ck.net.name, ck.name, ck.manifest, layer, units)

    def checked_layout(
        self,
        store: Store,
        network: str,
        checkpoint: str,
        manifest: CheckpointManifest,
        layer: str,
        units: Sequence[int],
    ) -> SpriteLayout | None:
        """A layer's sprite layout, checked once against one of its sprites (None: no sprites)."""
        lay = manifest.sprites.get(layer)
        if lay is None or not units:
            return None
        key = (str(store.root), network, checkpoint, layer)
        if key in self._layouts:
            return lay
        # One file per layer is enough to catch a sprite writer and reader that disagree on the layout.
        path = store.sprite_path(network, checkpoint, layer, units[0])
        if not path.is_file():
            raise RenderError(f"{path}: missing; the store is incomplete, rerun `sitegen build`")
        want = (len(lay.panels) * lay.cols * lay.cell, lay.rows * lay.cell)
        got = codecs.png_size(path)
        if got != want:
            raise RenderError(
                f"{path}: sprite is {got[0]}x{got[1]} px but manifest.json's layout "
                f"({lay.panels}, {lay.cols}x{lay.rows} cells of {lay.cell} px) needs {want[0]}x{want[1]}"
            )
        self._layouts.add(key)
        return lay
