"""The store's JSON records (pydantic: this is an edge, read by render and diff).

Every record carries ``format``; readers refuse other formats with a clear
StoreError rather than guessing. See docs/INTERNALS.md for the layout.
"""

from __future__ import annotations

from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict, Field

FORMAT = 1


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DiffRef(_Record):
    a: str
    b: str
    name: str


def created_now() -> str:
    """A record's ``created`` stamp (build, checkpoint entry, diff): now, UTC, to the second, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class BuildRecord(_Record):
    """``store/build.json``: one per build, written last."""

    format: int = FORMAT
    title: str
    spec_hash: str
    created: str
    sitegen_version: str
    torch_version: str
    device: str
    timings: dict[str, float] = Field(default_factory=dict)
    datasets: list[str]
    networks: list[str]
    diffs: list[DiffRef] = Field(default_factory=list)


#: Units per layer on a feature-evolution page, evenly spaced over the final checkpoint's shown units
#: (Zeiler & Fergus 2013, Fig. 4, shows a few). Checkpoints without atlas pages get sprites for these
#: only: build and render share this rule.
EVOLUTION_UNITS = 16


def evenly_spaced(units: list[int], n: int) -> list[int]:
    """``n`` of ``units``, evenly spaced (all of them when there are no more than ``n``)."""
    if len(units) <= n:
        return list(units)
    return [units[i * len(units) // n] for i in range(n)]


class DatasetRecord(_Record):
    """``store/datasets/<name>/dataset.json``."""

    format: int = FORMAT
    name: str
    source: str  # "builtin:doodles" or the folder path
    fingerprint: str
    class_names: list[str]
    image_size: int
    n_train: int
    n_probe: int
    counts: list[tuple[int, int]]  # per class: (train, probe)
    samples: list[list[int]]  # per class: a few probe image indices (dataset card thumbnails)
    grayscale: bool = False  # grey images: filters and reconstructions are drawn in grey


class Normalization(_Record):
    kind: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class LayerRecord(_Record):
    name: str
    module: str
    kind: str
    shape: list[int]
    units: int
    rf_size: int
    rf_stride: int
    rf_offset: float


class EpochRecord(_Record):
    epoch: int
    loss: float
    train_acc: float
    probe_acc: float
    seconds: float


class CheckpointRef(_Record):
    name: str
    accuracy: float | None = None  # probe top-1, when mined or trained
    atlas: bool = False  # has full atlas pages
    epoch: int | None = None


class NetworkRecord(_Record):
    """``store/networks/<name>/network.json``."""

    format: int = FORMAT
    name: str
    arch: str
    dataset: str
    weights: str | None = None
    params: int
    input_size: int
    normalization: Normalization
    layers: list[LayerRecord]
    checkpoints: list[CheckpointRef]
    training: list[EpochRecord] = Field(default_factory=list)


class SpriteLayout(_Record):
    """How a unit sprite is laid out: panels side by side, each a cols x rows grid of cell-px tiles."""

    cell: int
    cols: int
    rows: int
    panels: list[str]


class GridLayout(_Record):
    cell: int
    cols: int
    rows: int
    count: int
    layer: str


class Provenance(_Record):
    spec_hash: str
    section_hash: str
    checkpoint_hash: str
    dataset_fingerprint: str
    sitegen_version: str
    torch_version: str
    seed: int
    device: str
    created: str


class CheckpointManifest(_Record):
    """``store/networks/<net>/<ckpt>/manifest.json``: written last; its presence marks the entry complete."""

    format: int = FORMAT
    key: str
    network: str
    checkpoint: str
    provenance: Provenance
    timings: dict[str, float] = Field(default_factory=dict)
    accuracy: float
    top_k: int
    layers: list[str]
    shown_units: dict[str, list[int]]
    sprites: dict[str, SpriteLayout] = Field(default_factory=dict)
    filters: GridLayout | None = None
    activation_maps: bool = False
    reconstructions: list[str] = Field(default_factory=list)
    techniques: list[str] = Field(default_factory=list)  # analysis kinds written, in registry order
    # issue 12: each analysis document's own cache key (entry inputs + its params), kind -> key
    analysis_keys: dict[str, str] = Field(default_factory=dict)
