"""Render sections: one module per analysis kind, found through :mod:`sitegen.analyses.registry`.

A section module ``sitegen/render/sections/<kind>.py`` exports::

    TITLE = "Grad-CAM"              # its table-of-contents label (the section's id is the kind)
    TEMPLATE = "_gradcam.html"      # its partial; it branches on ``s.page`` when on several pages
    def network(doc, page: NetworkPage, files: Files) -> View | None     # any of these three,
    def layer(doc, page: LayerPage, files: Files) -> View | None         # for the pages it draws on;
    def unit(doc, page: UnitPage, files: Files) -> View | None           # None: nothing to show

``doc`` is the kind's typed store document (:mod:`sitegen.store.formats`), read and validated once
per checkpoint by :class:`CheckpointSections`. Pages include ``s.template`` for every
:class:`Section` in registry order. Numpy and the store only, never torch.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from sitegen.analyses.registry import REGISTRY
from sitegen.errors import RenderError, StoreError
from sitegen.render._models import Chip, Img
from sitegen.store import Store, codecs
from sitegen.store.formats import AnalysisDoc

__all__ = ["CheckpointSections", "Files", "LayerPage", "NetworkPage", "Section", "UnitPage"]


@dataclass(frozen=True, slots=True)
class Section:
    """One section of a page: the partial to include and its view model."""

    kind: str
    id: str  # the HTML id (and table-of-contents anchor)
    title: str  # the table-of-contents label
    template: str
    page: str  # "network" | "layer" | "unit"
    view: Any


@dataclass(frozen=True, slots=True)
class NetworkPage:
    """What a network-page section may use besides its document."""

    page_root: str  # "../" up to the site root from the page
    image: Callable[[int, int], Img]  # (probe index, display px) -> the probe image
    chips: Sequence[Chip]  # class chips, by class index
    class_names: Sequence[str]
    input_size: int
    layers: Sequence[str]
    weighted: Mapping[str, np.ndarray]  # layer -> class preference
    overall: np.ndarray  # overall class preference
    unit_href: Callable[[str, int], str]  # (layer, unit) -> site path of its page, "" without one


@dataclass(frozen=True, slots=True)
class LayerPage:
    layer: str
    weighted: np.ndarray
    class_names: Sequence[str]
    folder: str  # site folder of the layer's pages
    unit_href: Callable[[int], str]  # unit -> page (relative to folder), "" without one


@dataclass(frozen=True, slots=True)
class UnitPage:
    layer: str
    unit: int
    folder: str
    # (layer, unit, rank-1 probe image) -> that unit's page and thumbnail (render/peers.py); None in tests
    peer: Callable[[str, int, int], Any] | None = None
    chips: Sequence[Chip] = ()  # class chips, by class index (the effect section names classes)


class Files:
    """The checkpoint folder's files a section shows: checked, then copied into the site."""

    def __init__(self, ck_dir: Path, base: str, kind: str, add_file: Callable[[str, Path], None]) -> None:
        self.dir = ck_dir
        self.base = base  # site folder of the checkpoint's pages
        self.kind = kind
        self._add = add_file
        self._arrays: dict[str, dict[str, np.ndarray]] = {}

    def file(self, rel: str, site_path: str) -> str:
        """Take ``rel`` (relative to the checkpoint folder) into the site as ``site_path``."""
        self._add(site_path, self._source(rel))
        return site_path

    def _source(self, rel: str) -> Path:
        """The checkpoint folder's file ``rel``, checked: inside the folder, and there."""
        p = PurePosixPath(rel)
        if p.is_absolute() or ".." in p.parts:
            raise RenderError(
                f"{self.dir / (self.kind + '.json')}: file {rel!r} leaves the checkpoint folder"
            )
        src = self.dir / p
        if not src.is_file():
            raise RenderError(f"{src}: missing; the store is incomplete, rerun `sitegen build`")
        return src

    def arrays(self, rel: str) -> dict[str, np.ndarray]:
        """The arrays of an npz file of the checkpoint folder, read once per checkpoint (not copied)."""
        if rel not in self._arrays:
            src = self._source(rel)
            try:
                self._arrays[rel] = codecs.read_npz(src)
            except (OSError, ValueError, zipfile.BadZipFile) as e:
                raise RenderError(f"{src}: unreadable ({e}); rerun `sitegen build`") from None
        return self._arrays[rel]


class CheckpointSections:
    """The analysis documents of one atlas checkpoint (those its manifest lists), read once, and
    the sections they give each page."""

    def __init__(
        self,
        store: Store,
        network: str,
        checkpoint: str,
        names: Sequence[str],
        base: str,
        add_file: Callable[[str, Path], None],
    ) -> None:
        self.dir = store.checkpoint_dir(network, checkpoint)
        self.docs: dict[str, AnalysisDoc] = {}
        self._files: dict[str, Files] = {}
        for name in names:
            kind = REGISTRY.get(name)
            if kind is None:
                raise RenderError(
                    f"{self.dir / 'manifest.json'}: unknown analysis {name!r} (known: {list(REGISTRY)}); "
                    "rerun `sitegen build` or upgrade sitegen"
                )
            try:
                self.docs[name] = store.read_analysis(network, checkpoint, kind.doc)
            except StoreError as e:
                raise RenderError(str(e)) from None
            self._files[name] = Files(self.dir, base, name, add_file)

    def __bool__(self) -> bool:
        return bool(self.docs)

    def network(self, page: NetworkPage) -> tuple[Section, ...]:
        return self._sections("network", page)

    def layer(self, page: LayerPage) -> tuple[Section, ...]:
        return self._sections("layer", page)

    def unit(self, page: UnitPage) -> tuple[Section, ...]:
        return self._sections("unit", page)

    def _sections(self, which: str, page: Any) -> tuple[Section, ...]:
        out = []
        for name in REGISTRY:  # registry order, whatever the manifest's
            doc = self.docs.get(name)
            if doc is None:
                continue
            module = REGISTRY[name].section()
            draw = getattr(module, which, None)
            if draw is None:
                continue
            try:
                view = draw(doc, page, self._files[name])
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
                # a document that validates but does not fit this store (e.g. a class index past
                # the dataset's classes)
                path = self.dir / f"{name}.json"
                raise RenderError(
                    f"{path}: malformed ({type(e).__name__}: {e}); rerun `sitegen build`"
                ) from None
            if view is not None:
                out.append(Section(name, name, module.TITLE, module.TEMPLATE, which, view))
        return tuple(out)
