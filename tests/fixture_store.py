"""A small but realistic artifact store, written with numpy + Pillow only (no torch).

The render tests, the browser tests and ``benchmarks/render.py`` draw their sites from it. It follows
docs/INTERNALS.md exactly and writes through :mod:`sitegen.store`, so a change of the store format
shows up here as a failing test rather than as a silently stale fixture.

What it holds: one dataset (``shapes``: procedurally drawn line sketches, 6 classes), two networks on
it — ``tiny-alex`` (checkpoints epoch-1 and epoch-2, both with atlas pages, training history, filter
weights) and ``tiny-vgg`` (one checkpoint, no weights.npz) — each with layers conv1 (conv), conv2
(conv), fc6 (linear) and prob, unit sprites with two panels (patches, deconvnet; prob has patches
only; tiny-vgg's fc6 has deconvnet only, as builds store linear layers), a filter grid for conv1
and activation maps of three probe images. ``tiny-alex``'s last
checkpoint (epoch-2 by default) also has the seven issue-7 technique files (:func:`_write_techniques`,
:data:`TECHNIQUES` in its manifest): Grad-CAM at conv2 (one probe image per class), occlusion maps of
five probe images (the fifth of class 4, the XSS class when ``xss``), a t-SNE-like embedding of all
probe images, invariance sweeps, stroke densities measured on the images, feature visualizations of
conv2's shown units and empirical RFs of its first two; the other checkpoints have none. They use
their own random generator, so every array and image of the store is the same with or without them.

Epochs differ in a controlled way, so diffs have exact expected values (tests/test_diff.py):

- ``prob`` unit ``u`` lists the probe images of class ``u`` first (ranks 1..k-1, index order), then
  those of class ``u + 1``, then the rest: no randomness.
- every later epoch derives each unit's top-k from the previous epoch's (:func:`evolve_topk`): odd
  units swap ranks 1 and 2, and unit ``u`` replaces its last ``u % 3`` images by the smallest-index
  probe images not in its list.
- filter weights (``weights.npz``: conv1, conv2, fc6) of unit ``u`` turn by ``u * 7.5`` degrees per
  epoch (:data:`TURN_DEGREES`), so the cosine between consecutive epochs is ``cos(u * 7.5°)``.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from sitegen.analyses.class_hist import overall_preference, probe_picks
from sitegen.analyses.stroke import spearman
from sitegen.store import Store, codecs
from sitegen.store.formats import (
    EmbeddingDoc,
    ErfDoc,
    ErfUnit,
    FeatVisDoc,
    FeatVisLayer,
    GradCamDoc,
    GradCamImage,
    InvarianceDoc,
    InvarianceKind,
    OcclusionDoc,
    OcclusionImage,
    StrokeDoc,
)
from sitegen.store.manifest import (
    BuildRecord,
    CheckpointManifest,
    CheckpointRef,
    DatasetRecord,
    DiffRef,
    EpochRecord,
    GridLayout,
    LayerRecord,
    NetworkRecord,
    Normalization,
    Provenance,
    SpriteLayout,
)

XSS_CLASS = "<img src=x onerror=alert(1)>"
XSS_TITLE = "Fixture atlas <script>alert('title')</script> & co"
CLASSES = ("circle", "square", "triangle", "cross", "zigzag", "spiral")
DEFAULT_UNITS = {"conv1": 8, "conv2": 12, "fc6": 16}
IMAGE_SIZE = 48
TURN_DEGREES = 7.5  # per unit index and epoch: the fixture's filter weights rotate by u * 7.5°
PER_CLASS_PROBE = 8
PER_CLASS_TRAIN = 24

# (name, kind, rf_size, rf_stride, rf_offset, spatial side, sprite cell) of the fixture's layer table;
# conv1 / conv2 mimic a small AlexNet-style net on 48-px inputs.
_LAYERS = (
    ("conv1", "conv", 5, 2, 1.0, 24, 16),
    ("conv2", "conv", 17, 4, 3.0, 12, 24),
    ("fc6", "linear", IMAGE_SIZE, IMAGE_SIZE, IMAGE_SIZE / 2, 0, 32),
    ("prob", "prob", IMAGE_SIZE, IMAGE_SIZE, IMAGE_SIZE / 2, 0, 32),
)
_MODULES = {"conv1": "features.1", "conv2": "features.4", "fc6": "classifier.2", "prob": ""}


def make_fixture_store(
    root: Path,
    *,
    xss: bool = False,
    n_units: Mapping[str, int] | None = None,
    shown: Mapping[str, int] | None = None,
    top_k: int = 9,
    n_classes: int = 6,
    distinct_sprites: int | None = None,
    networks: Sequence[str] = ("tiny-alex", "tiny-vgg"),
    seed: int = 0,
    epochs: int = 2,
    weights: bool = True,
    diff: bool = False,
    techniques: bool = True,
) -> Path:
    """Write the fixture store under ``root`` and return ``root``.

    Args:
        root: the store folder (created).
        xss: name one class ``<img src=x onerror=alert(1)>`` and put markup in the title, to prove
            that every user string is escaped.
        n_units: units per layer for conv1, conv2 and fc6 (default 8, 12, 16); the benchmark scales
            these to thousands. ``prob`` always has one unit per class.
        shown: how many units of a layer get pages (default: all, except fc6 shows every unit but
            the last four, so shown units are not contiguous at the end).
        top_k: images kept per unit.
        n_classes: number of classes; beyond the six shapes, classes are numbered variants of them
            (``circle-2``…), to look at charts and tables with 160+ classes.
        distinct_sprites: when set, unit ``u`` gets the sprite bytes of unit ``u % distinct_sprites``
            (the benchmark's thousands of units without thousands of PNG encodes; the sprites then no
            longer match the mined images, which render does not check).
        networks: which of the two networks to write (one network: no compare page).
        seed: seed of every random choice (the store is deterministic for a given seed).
        epochs: checkpoints of ``tiny-alex`` (epoch-1 … epoch-N); the first and the last have atlas
            pages, the ones between only store entries (what feature evolution reads).
        weights: write ``weights.npz`` (filter weights) for ``tiny-alex``'s checkpoints.
        diff: also diff ``tiny-alex`` epoch-1 against its last epoch into ``store/diffs/`` and list it
            in build.json (needs ``tiny-alex`` and ``epochs >= 2``).
        techniques: write the seven issue-7 technique files for ``tiny-alex``'s last checkpoint.

    Returns:
        ``root``, for chaining.

    Example:
        >>> store_root = make_fixture_store(tmp_path / "store", xss=True)
    """
    rng = np.random.default_rng(seed)
    store = Store(root)
    units = {**DEFAULT_UNITS, **(n_units or {})}
    classes = [
        CLASSES[c % len(CLASSES)] + (f"-{c // len(CLASSES) + 1}" if c >= len(CLASSES) else "")
        for c in range(n_classes)
    ]
    if xss:
        classes[4] = XSS_CLASS

    labels, images = _write_dataset(store, classes, seed)

    alex = [
        (f"epoch-{i + 1}", 0.55 if i == 0 else round(0.55 + 0.23 * i / (epochs - 1), 3))
        for i in range(epochs)
    ]
    nets = {
        "tiny-alex": ("zoo:tiny_alex", alex),
        "tiny-vgg": ("zoo:tiny_vgg", [("final", 0.83)]),
    }
    nets = {name: nets[name] for name in networks}
    for net, (arch, ckpts) in nets.items():
        layer_recs = []
        for name, kind, rf, stride, offset, side, _cell in _LAYERS:
            u = n_classes if name == "prob" else units[name]
            shape = [u, side, side] if side else [u]
            layer_recs.append(
                LayerRecord(
                    name=name,
                    module=_MODULES[name],
                    kind=kind,
                    shape=shape,
                    units=u,
                    rf_size=rf,
                    rf_stride=stride,
                    rf_offset=offset,
                )
            )
        training = []
        if len(ckpts) > 1:
            training = [
                EpochRecord(
                    epoch=i + 1,
                    loss=round(1.6 / (i + 1.2), 3),
                    train_acc=round(acc + 0.06, 3),
                    probe_acc=acc,
                    seconds=round(3.2 + i * 0.1, 2),
                )
                for i, (_, acc) in enumerate(ckpts)
            ]
        store.write_network(
            NetworkRecord(
                name=net,
                arch=arch,
                dataset="shapes",
                weights=None,
                params=1_234_567 if net == "tiny-alex" else 2_345_678,
                input_size=IMAGE_SIZE,
                normalization=Normalization(kind="dataset", mean=(0.93, 0.93, 0.93), std=(0.21, 0.21, 0.21)),
                layers=layer_recs,
                checkpoints=[
                    CheckpointRef(
                        name=c,
                        accuracy=acc,
                        atlas=i in (0, len(ckpts) - 1),
                        epoch=(i + 1) if training else None,
                    )
                    for i, (c, acc) in enumerate(ckpts)
                ],
                training=training,
            )
        )
        prev: _Epoch | None = None
        for i, (ckpt, acc) in enumerate(ckpts):
            prev = _write_checkpoint(
                store,
                net,
                ckpt,
                acc,
                layer_recs,
                labels,
                images,
                n_classes,
                top_k,
                shown,
                distinct_sprites,
                rng,
                prev,
                weights and net == "tiny-alex",
                techniques and net == "tiny-alex" and i == len(ckpts) - 1,
                seed,
            )

    refs = []
    if diff:
        from sitegen.diff import DiffSide, diff_name, diff_stores, write_diff

        sa, sb = DiffSide(root, "tiny-alex", alex[0][0]), DiffSide(root, "tiny-alex", alex[-1][0])
        name = diff_name(sa, sb)
        write_diff(store, name, diff_stores(sa, sb))
        refs.append(DiffRef(a=sa.ref, b=sb.ref, name=name))
    title = XSS_TITLE if xss else "Fixture atlas"
    store.write_build(
        BuildRecord(
            title=title,
            spec_hash="0123456789abcdef",
            created="2025-11-21T20:30:00+00:00",
            sitegen_version="0.1.0",
            torch_version="2.15.0",
            device="cpu",
            timings={"data": 0.41, "train": 12.3, "mine": 3.14, "analyses": 5.2, "store": 0.8},
            datasets=["shapes"],
            networks=list(nets),
            diffs=refs,
        )
    )
    return root


# --- dataset ----------------------------------------------------------------------------------------


def _draw(cls: int, rng: random.Random) -> np.ndarray:
    """One sketch of class ``cls``: black strokes on white, jittered (like the built-in doodles)."""
    s = IMAGE_SIZE
    im = Image.new("L", (s, s), 255)
    d = ImageDraw.Draw(im)
    c = s / 2 + rng.uniform(-4, 4), s / 2 + rng.uniform(-4, 4)
    r = rng.uniform(11, 17)
    w = rng.choice((2, 3))
    if cls == 0:
        d.ellipse((c[0] - r, c[1] - r, c[0] + r, c[1] + r), outline=0, width=w)
    elif cls == 1:
        d.rectangle((c[0] - r, c[1] - r, c[0] + r, c[1] + r), outline=0, width=w)
    elif cls == 2:
        d.polygon([(c[0], c[1] - r), (c[0] - r, c[1] + r), (c[0] + r, c[1] + r)], outline=0, width=w)
    elif cls == 3:
        d.line((c[0] - r, c[1] - r, c[0] + r, c[1] + r), fill=0, width=w)
        d.line((c[0] - r, c[1] + r, c[0] + r, c[1] - r), fill=0, width=w)
    elif cls == 4:
        pts = [(c[0] - r + i * r / 2, c[1] + (r / 2 if i % 2 else -r / 2)) for i in range(5)]
        d.line(pts, fill=0, width=w)
    else:
        pts = [
            (c[0] + t / 2 * math.cos(t), c[1] + t / 2 * math.sin(t)) for t in np.linspace(0, 4 * math.pi, 60)
        ]
        d.line(pts, fill=0, width=w)
    return np.asarray(im.convert("RGB"))


def _write_dataset(store: Store, classes: list[str], seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    rnd = random.Random(seed)
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), PER_CLASS_PROBE)
    images = [_draw(int(c) % len(CLASSES), rnd) for c in labels]
    for i, img in enumerate(images):
        store.write_png(store.image_path("shapes", i), img)
    buf = io.BytesIO()
    np.save(buf, labels, allow_pickle=False)
    codecs.write_bytes(store.dataset_dir("shapes") / "labels.npy", buf.getvalue())
    store.write_dataset(
        DatasetRecord(
            name="shapes",
            source="builtin:doodles",
            fingerprint="f1f2f3f4f5f6f7f8",
            class_names=classes,
            image_size=IMAGE_SIZE,
            n_train=PER_CLASS_TRAIN * len(classes),
            n_probe=len(labels),
            counts=[(PER_CLASS_TRAIN, PER_CLASS_PROBE)] * len(classes),
            samples=[[c * PER_CLASS_PROBE + j for j in range(4)] for c in range(len(classes))],
        )
    )
    return labels, images


# --- one checkpoint ---------------------------------------------------------------------------------


def _write_checkpoint(
    store: Store,
    net: str,
    ckpt: str,
    accuracy: float,
    layers: list[LayerRecord],
    labels: np.ndarray,
    images: list[np.ndarray],
    n_classes: int,
    k: int,
    shown: Mapping[str, int] | None,
    distinct_sprites: int | None,
    rng: np.random.Generator,
    prev: _Epoch | None,
    write_weights: bool,
    write_techniques: bool = False,
    seed: int = 0,
) -> _Epoch:
    n_probe = len(labels)
    epoch = _Epoch(images={}, weights={})
    mined: dict[str, np.ndarray] = {}
    classes: dict[str, np.ndarray] = {}
    shown_units: dict[str, list[int]] = {}
    sprites: dict[str, SpriteLayout] = {}
    cells = {name: cell for name, *_, cell in _LAYERS}
    per_layer: list[np.ndarray] = []
    for lay in layers:
        u = lay.units
        side = lay.shape[1] if len(lay.shape) == 3 else 0
        values = np.zeros((u, k), np.float32)
        imgs = np.zeros((u, k), np.int64)
        rows = np.zeros((u, k), np.int32)
        cols = np.zeros((u, k), np.int32)
        boxes = np.zeros((u, k, 4), np.int32)
        if prev is not None:
            imgs[:] = evolve_topk(prev.images[lay.name], n_probe)
        for unit in range(u):
            dom = unit % n_classes
            if prev is not None:
                pick = imgs[unit]
            elif lay.kind == "prob":
                nxt = (dom + 1) % n_classes
                order = np.concatenate(
                    [
                        np.flatnonzero(labels == dom)[: k - 1],
                        np.flatnonzero((labels == nxt) & (nxt != dom)),
                        np.flatnonzero(labels == dom)[k - 1 :],
                        np.flatnonzero((labels != dom) & (labels != nxt)),
                    ]
                )
                pick = imgs[unit] = order[:k]
            else:
                # A unit prefers one class; its purity decides how many of its top-k come from it.
                own = np.flatnonzero(labels == dom)
                other = np.flatnonzero(labels != dom)
                n_own = int(rng.integers(k // 3, k + 1))
                pick = np.concatenate(
                    [
                        rng.choice(own, min(n_own, len(own)), replace=False),
                        rng.choice(other, k - min(n_own, len(own)), replace=False),
                    ]
                )
                rng.shuffle(pick[: k // 2])
                imgs[unit] = pick
            values[unit] = np.sort(rng.gamma(3.0, 2.0, k).astype(np.float32))[::-1] + (0.0 if side else 1.0)
            if lay.kind == "prob":
                values[unit] = np.sort(rng.uniform(0.5, 1.0, k).astype(np.float32))[::-1]
            if side:
                for j in range(k):
                    # Units fire on strokes: centre the RF on an ink pixel of the image.
                    ink = np.argwhere(images[int(pick[j])][..., 0] < 128)
                    r, c = ink[rng.integers(len(ink))] if len(ink) else (IMAGE_SIZE // 2, IMAGE_SIZE // 2)
                    rows[unit, j] = min(side - 1, max(0, round((r - lay.rf_offset) / lay.rf_stride)))
                    cols[unit, j] = min(side - 1, max(0, round((c - lay.rf_offset) / lay.rf_stride)))
                    boxes[unit, j] = _box(lay, int(rows[unit, j]), int(cols[unit, j]))
            else:
                boxes[unit] = (0, 0, IMAGE_SIZE, IMAGE_SIZE)
        epoch.images[lay.name] = imgs
        if write_weights and lay.kind in ("conv", "linear"):
            fan_in = 75 if lay.name == "conv1" else 4 * layers[layers.index(lay) - 1].units
            epoch.weights[lay.name] = (
                rng.normal(0, 1, (u, fan_in)).astype(np.float32)
                if prev is None
                else _turn(prev.weights[lay.name], rng)
            )
        top_labels = labels[imgs]
        per_rank = np.stack([np.bincount(top_labels[:, r], minlength=n_classes) for r in range(k)]).astype(
            np.float32
        )
        weighted = ((k - np.arange(k))[:, None] * per_rank).sum(0).astype(np.float32)
        dominant = np.array([np.bincount(t, minlength=n_classes).argmax() for t in top_labels], np.int64)
        purity = (top_labels == dominant[:, None]).mean(1).astype(np.float32)
        # Exemplars: per class, the first three distinct images of that class among the units' top-k.
        exemplars = np.full((n_classes, 3), -1, np.int64)
        uniq, first = np.unique(imgs.ravel(), return_index=True)
        filled = np.zeros(n_classes, np.int64)
        for i in uniq[np.argsort(first)].tolist():
            c = labels[i]
            if filled[c] < 3:
                exemplars[c, filled[c]] = i
                filled[c] += 1
        per_layer.append(weighted)
        mined |= {
            f"{lay.name}/values": values,
            f"{lay.name}/images": imgs,
            f"{lay.name}/rows": rows,
            f"{lay.name}/cols": cols,
            f"{lay.name}/boxes": boxes,
        }
        classes |= {
            f"{lay.name}/per_rank": per_rank,
            f"{lay.name}/weighted": weighted,
            f"{lay.name}/purity": purity,
            f"{lay.name}/dominant": dominant,
            f"{lay.name}/exemplars": exemplars,
        }

        n_shown = (shown or {}).get(lay.name, u - 4 if lay.name == "fc6" and u > 8 else u)
        shown_units[lay.name] = list(range(min(n_shown, u)))
        # tiny-vgg's fc6 stores no patches panel (issue 14: a linear unit's patch is the whole probe
        # image, already in img/): render shows the probe images in its place
        if lay.kind == "prob":
            panels = ["patches"]
        elif lay.kind == "linear" and net == "tiny-vgg":
            panels = ["deconvnet"]
        else:
            panels = ["patches", "deconvnet"]
        cols_, rows_ = 3, math.ceil(k / 3)
        sprites[lay.name] = SpriteLayout(cell=cells[lay.name], cols=cols_, rows=rows_, panels=panels)
        cache: dict[tuple[int, ...], bytes] = {}
        for unit in shown_units[lay.name]:
            src = unit % distinct_sprites if distinct_sprites else unit
            _write_sprite(
                store, net, ckpt, lay.name, unit, images, imgs[src], boxes[src], sprites[lay.name], cache
            )

    n = n_probe
    top5 = np.zeros((n, 5), np.int64)
    top5_prob = np.zeros((n, 5), np.float32)
    confusion = np.zeros((n_classes, n_classes), np.int64)
    for i in range(n):
        p = rng.dirichlet(np.ones(n_classes) * 0.5)
        if rng.random() < accuracy:
            p[labels[i]] += 2.0
        p /= p.sum()
        order = np.argsort(-p)[:5]
        top5[i], top5_prob[i] = order, p[order]
        confusion[labels[i], order[0]] += 1
    mined |= {"predictions/top5": top5, "predictions/top5_prob": top5_prob}
    # as the build: each layer's histogram scaled to sum 1, then summed over the layers
    overall = overall_preference(per_layer)
    classes |= {"overall/weighted": overall.astype(np.float32), "confusion": confusion}
    store.write_arrays(net, ckpt, "mined", mined)
    store.write_arrays(net, ckpt, "classes", classes)
    if epoch.weights:
        store.write_arrays(net, ckpt, "weights", epoch.weights)

    filters = _write_filters(store, net, ckpt, layers[0].units, rng)
    _write_actmaps(store, net, ckpt, layers, labels, top5, top5_prob, rng)
    written: list[str] = []
    timings = {"mine": 1.2, "patches": 0.4, "deconvnet": 2.1, "class_hist": 0.01}
    if write_techniques:
        written = _write_techniques(
            store,
            net,
            ckpt,
            layers,
            labels,
            images,
            top5,
            top5_prob,
            {lay.name: classes[f"{lay.name}/weighted"] for lay in layers},
            shown_units,
            distinct_sprites,
            # Own generator: the techniques leave every other fixture value as it was without them.
            np.random.default_rng([seed, 7]),
        )
        seconds = {"gradcam": 0.9, "occlusion": 1.7, "embedding": 0.6, "invariance": 1.1, "stroke": 0.05}
        seconds |= {"featvis": 6.4, "erf": 2.3}
        timings |= {name: seconds[name] for name in written}
    prov = Provenance(
        spec_hash="0123456789abcdef",
        section_hash="aa11",
        checkpoint_hash=f"{net}-{ckpt}-hash",
        dataset_fingerprint="f1f2f3f4f5f6f7f8",
        sitegen_version="0.1.0",
        torch_version="2.15.0",
        seed=0,
        device="cpu",
        created="2025-11-21T20:30:00+00:00",
    )
    store.write_manifest(
        CheckpointManifest(
            key=f"key-{net}-{ckpt}",
            network=net,
            checkpoint=ckpt,
            provenance=prov,
            timings=timings,
            accuracy=accuracy,
            top_k=k,
            layers=[lay.name for lay in layers],
            shown_units=shown_units,
            sprites=sprites,
            filters=filters,
            activation_maps=True,
            reconstructions=["deconvnet"],
            techniques=written,
        )
    )
    return epoch


@dataclass(frozen=True)
class _Epoch:
    """What the next epoch derives from: top-k images and filter weights per layer."""

    images: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]


def evolve_topk(prev: np.ndarray, n_probe: int) -> np.ndarray:
    """The next epoch's top-k lists ``[U, k]`` from the previous ones, by a rule tests derive by hand:
    odd units swap ranks 1 and 2; unit ``u`` replaces its last ``u % 3`` images by the smallest-index
    probe images that are not in its list (so its overlap with the previous epoch is ``k - u % 3``)."""
    out = prev.copy()
    k = prev.shape[1]
    if k < 4:
        return out
    for u in range(len(prev)):
        row = prev[u].tolist()
        if u % 2 == 1:
            row[0], row[1] = row[1], row[0]
        s = u % 3
        if s:
            taken = set(row)
            row[k - s :] = [i for i in range(n_probe) if i not in taken][:s]
        out[u] = row
    return out


def _turn(w: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotate each row ``w[u]`` by ``u * TURN_DEGREES`` within a random plane, keeping its norm."""
    out = np.empty_like(w)
    for u, row in enumerate(w.astype(np.float64)):
        r = rng.normal(0, 1, row.shape)
        v = r - (r @ row) / (row @ row) * row
        v *= np.linalg.norm(row) / np.linalg.norm(v)
        t = math.radians(u * TURN_DEGREES)
        out[u] = math.cos(t) * row + math.sin(t) * v
    return out


def _box(lay: LayerRecord, row: int, col: int) -> tuple[int, int, int, int]:
    """Clipped RF box (top, left, bottom, right) of unit position (row, col), as the store keeps it."""
    half = lay.rf_size / 2
    cr, cc = lay.rf_offset + row * lay.rf_stride, lay.rf_offset + col * lay.rf_stride
    top, left = max(0, round(cr - half)), max(0, round(cc - half))
    bottom, right = min(IMAGE_SIZE, round(cr + half)), min(IMAGE_SIZE, round(cc + half))
    return top, left, max(bottom, top + 1), max(right, left + 1)


def _write_sprite(
    store: Store,
    net: str,
    ckpt: str,
    layer: str,
    unit: int,
    images: list[np.ndarray],
    idx: np.ndarray,
    boxes: np.ndarray,
    lay: SpriteLayout,
    cache: dict[tuple[int, ...], bytes],
) -> None:
    """The panels ``lay.panels`` names, side by side: patches (RF crops, upscaled) and/or a fake
    deconvnet panel; panels are placed by name, as render reads them."""
    key = (*idx.tolist(), *boxes.ravel().tolist(), *lay.panels)
    path = store.sprite_path(net, ckpt, layer, unit)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same bytes as the store's writer, without its per-file fsync (10 ms each here): a fixture of
    # thousands of sprites needs no crash safety.
    if key in cache:
        path.write_bytes(cache[key])
        return
    c = lay.cell
    panel_w = lay.cols * c
    sheet = np.full((lay.rows * c, panel_w * len(lay.panels), 3), 255, np.uint8)
    for j, (i, (t, left, b, r)) in enumerate(zip(idx.tolist(), boxes.tolist(), strict=True)):
        if i < 0:
            continue
        crop = Image.fromarray(images[i][t:b, left:r]).resize((c, c), Image.Resampling.NEAREST)
        row, col = divmod(j, lay.cols)
        if "patches" in lay.panels:
            x0 = lay.panels.index("patches") * panel_w + col * c
            sheet[row * c : (row + 1) * c, x0 : x0 + c] = np.asarray(crop)
        if "deconvnet" in lay.panels:
            # Deconvnet reconstructions look like coloured strokes on grey: imitate that cheaply.
            ink = 1 - np.asarray(crop.convert("L").filter(ImageFilter.GaussianBlur(1)), np.float32) / 255
            tint = np.array([0.35 + 0.6 * ((unit * 37) % 7) / 7, 0.55, 0.95 - 0.6 * ((unit * 37) % 7) / 7])
            rec = 128 + ink[..., None] * (tint * 2 - 1) * 127
            x0 = lay.panels.index("deconvnet") * panel_w + col * c
            sheet[row * c : (row + 1) * c, x0 : x0 + c] = np.clip(rec, 0, 255).astype(np.uint8)
    data = codecs.encode_webp(sheet)
    cache[key] = data
    path.write_bytes(data)


def _write_filters(store: Store, net: str, ckpt: str, count: int, rng: np.random.Generator) -> GridLayout:
    """conv1's 5x5 RGB filters, each shown 3x enlarged in a 16-px cell with a 1-px white border."""
    cell, cols = 16, 4
    rows = math.ceil(count / cols)
    grid = np.full((rows * cell, cols * cell, 3), 255, np.uint8)
    for f in range(count):
        w = rng.normal(0, 1, (5, 5, 3))
        w = (w - w.min()) / (w.max() - w.min() + 1e-9)
        tile = np.kron((w * 255).astype(np.uint8), np.ones((3, 3, 1), np.uint8))
        r, c = divmod(f, cols)
        grid[r * cell : r * cell + 15, c * cell : c * cell + 15] = tile
    layout = GridLayout(cell=cell, cols=cols, rows=rows, count=count, layer="conv1")
    store.write_png(store.checkpoint_dir(net, ckpt) / "filters.png", grid)
    store.write_json(store.checkpoint_dir(net, ckpt) / "filters.json", {"format": 1, **layout.model_dump()})
    return layout


def _heat(m: np.ndarray) -> np.ndarray:
    """A magma-like colour map of values in [0, 1] (uint8 RGB)."""
    m = np.clip(m, 0, 1)[..., None]
    lo, mid, hi = np.array([10, 8, 40]), np.array([190, 50, 100]), np.array([252, 230, 160])
    rgb = np.where(m < 0.5, lo + (mid - lo) * (m * 2), mid + (hi - mid) * (m * 2 - 1))
    return rgb.astype(np.uint8)


def _write_actmaps(
    store: Store,
    net: str,
    ckpt: str,
    layers: list[LayerRecord],
    labels: np.ndarray,
    top5: np.ndarray,
    top5_prob: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """actmaps.json + one PNG per (image, layer, channel): the format docs/INTERNALS.md documents."""
    out = []
    for cls in range(3):
        idx = int(np.flatnonzero(labels == cls)[0])
        entry_layers = []
        for lay in layers:
            if lay.kind != "conv":
                continue
            side = lay.shape[1]
            chans = sorted(rng.choice(lay.units, 3, replace=False).tolist())
            entry = []
            for ch in chans:
                yy, xx = np.mgrid[0:side, 0:side] / side
                m = (
                    np.exp(-((yy - rng.random()) ** 2 + (xx - rng.random()) ** 2) * 8)
                    + rng.random((side, side)) * 0.2
                )
                png = f"actmaps/{idx}-{lay.name}-{ch}.png"
                store.write_png(store.checkpoint_dir(net, ckpt) / png, _heat(m / m.max()))
                entry.append({"channel": ch, "norm": round(float(np.linalg.norm(m)), 3), "png": png})
            entry.sort(key=lambda e: -e["norm"])
            entry_layers.append({"layer": lay.name, "channels": entry})
        out.append(
            {
                "index": idx,
                # -1 ("not given") for the first image, as builds before issue 14 wrote it: render
                # takes the true class from the dataset's labels either way
                "label": -1 if cls == 0 else cls,
                "top5": [
                    [int(c), round(float(p), 4)] for c, p in zip(top5[idx], top5_prob[idx], strict=True)
                ],
                "layers": entry_layers,
            }
        )
    store.write_json(store.checkpoint_dir(net, ckpt) / "actmaps.json", {"format": 1, "images": out})


# --- the literature's other techniques (issue 7) -----------------------------------------------------

#: What the fixture writes for ``tiny-alex``'s last checkpoint, in registry order
#: (:func:`sitegen.analyses.registry.names`).
TECHNIQUES = ("gradcam", "occlusion", "embedding", "invariance", "featvis", "stroke", "erf")
FEATVIS_LAYER, FEATVIS_SIZE = "conv2", 64
ERF_LAYER, ERF_UNITS, ERF_OCCLUDER, ERF_STRIDE = "conv2", 2, 5, 2
OCCLUSION_SIZE, OCCLUSION_STRIDE = 8, 4
GRADCAM_IMAGES = 8  # the spec's default: with the fixture's 6 classes, one image per class
OCCLUSION_IMAGES = 5  # one per class, in class order: the fifth is the XSS class when ``xss``
INVARIANCE_IMAGES = 4
INVARIANCE_LAYERS = ("conv1", "fc6")

_VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.float64)


def _viridis(m: np.ndarray) -> np.ndarray:
    """Values in [0, 1] to uint8 RGB through five viridis anchors (the build uses the full map)."""
    x = np.clip(m, 0, 1) * (len(_VIRIDIS) - 1)
    lo = np.floor(x).astype(np.int64).clip(0, len(_VIRIDIS) - 2)
    t = (x - lo)[..., None]
    return np.rint(_VIRIDIS[lo] * (1 - t) + _VIRIDIS[lo + 1] * t).astype(np.uint8)


def _blob(side: int, centre: tuple[float, float], sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64)
    return np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * sigma**2))


def _ink(image: np.ndarray) -> np.ndarray:
    return (image[..., 0] < 128).astype(np.float64)


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """:func:`sitegen.analyses.stroke.spearman` as stroke.json stores it: rounded, None where undefined."""
    rho = spearman(a, b)
    return None if np.isnan(rho) else round(rho, 4)


def _prob_of(idx: int, cls: int, top5: np.ndarray, top5_prob: np.ndarray) -> float:
    hit = np.flatnonzero(top5[idx] == cls)
    return float(top5_prob[idx, hit[0]]) if len(hit) else 0.01


def _write_techniques(
    store: Store,
    net: str,
    ckpt: str,
    layers: list[LayerRecord],
    labels: np.ndarray,
    images: list[np.ndarray],
    top5: np.ndarray,
    top5_prob: np.ndarray,
    weighted: Mapping[str, np.ndarray],
    shown: Mapping[str, list[int]],
    distinct_sprites: int | None,
    rng: np.random.Generator,
) -> list[str]:
    """The seven analysis documents (:mod:`sitegen.store.formats`, docs/INTERNALS.md), written through
    the store's own types; synthetic
    but shaped like the real ones: maps follow each probe image's strokes, the embedding clusters by
    class, invariance curves grow with the transform, stroke densities are measured on the images."""
    out = store.checkpoint_dir(net, ckpt)
    by_name = {lay.name: lay for lay in layers}
    n_classes = int(labels.max()) + 1
    s = IMAGE_SIZE
    conv2 = by_name["conv2"]

    # Grad-CAM at conv2: the true class's map sits on the strokes, the predicted one's beside them.
    entries = []
    for idx in probe_picks(labels, min(n_classes, GRADCAM_IMAGES)):
        ink = _ink(images[idx])
        cy, cx = np.argwhere(ink > 0).mean(0) if ink.any() else (s / 2, s / 2)
        names = {}
        for which, shift in (("true", 0.0), ("pred", 9.0)):
            heat = _blob(s, (cy, cx + shift), 7.0) * 0.7 + np.asarray(
                Image.fromarray((ink * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(3)), np.float64
            ) / 255 * (0.9 if which == "true" else 0.3)
            heat /= heat.max()
            mixed = images[idx].astype(np.float64) * 0.45 + _viridis(heat).astype(np.float64) * 0.55
            names[which] = f"gradcam/{idx}-{which}.png"
            store.write_png(out / names[which], np.clip(np.rint(mixed), 0, 255).astype(np.uint8))
        label, pred = int(labels[idx]), int(top5[idx, 0])
        entries.append(
            GradCamImage(
                index=idx,
                label=label,
                predicted=pred,
                true_prob=round(_prob_of(idx, label, top5, top5_prob), 4),
                pred_prob=round(float(top5_prob[idx, 0]), 4),
                true_peak=round(float(rng.uniform(0.2, 1.5)), 5),
                pred_peak=round(float(rng.uniform(0.2, 1.5)), 5),
                true_png=names["true"],
                pred_png=names["pred"],
            )
        )
    store.write_analysis(net, ckpt, GradCamDoc(layer="conv2", grid=[conv2.shape[1]] * 2, images=entries))

    # Occlusion: hiding ink lowers the probabilities and the strongest conv2 unit's activation.
    size, stride = OCCLUSION_SIZE, OCCLUSION_STRIDE
    tops = np.arange(0, s - size + 1, stride)
    centres = tops + (size - 1) / 2
    shown_conv2 = shown.get("conv2", [])
    occl = []
    for j, idx in enumerate(probe_picks(labels, OCCLUSION_IMAGES)):
        ink = _ink(images[idx])
        hidden = np.array([[ink[t : t + size, left : left + size].sum() for left in tops] for t in tops])
        hidden /= max(hidden.max(), 1.0)
        label, pred = int(labels[idx]), int(top5[idx, 0])
        p_true, p_pred = _prob_of(idx, label, top5, top5_prob), float(top5_prob[idx, 0])
        unit = shown_conv2[(3 * j + 1) % len(shown_conv2)] if shown_conv2 else 0
        act0 = float(rng.uniform(3, 9))
        focus = _blob(len(tops), tuple(rng.uniform(2, len(tops) - 3, 2)), 1.6)
        true_map = p_true * (1 - 0.85 * hidden)
        pred_map = p_pred * (1 - 0.6 * hidden * rng.uniform(0.5, 1.0, hidden.shape))
        occl.append(
            OcclusionImage(
                index=idx,
                label=label,
                predicted=pred,
                unit=unit,
                base_true_prob=round(p_true, 4),
                base_pred_prob=round(p_pred, 4),
                base_activation=round(act0, 4),
                true_prob=np.round(true_map, 4).tolist(),
                pred_prob=np.round(pred_map, 4).tolist(),
                activation=np.round(act0 * (1 - 0.9 * focus * hidden.clip(0.3)), 4).tolist(),
                top_class=np.where(true_map < p_true * 0.4, (label + 1) % n_classes, pred).tolist(),
            )
        )
    store.write_analysis(
        net,
        ckpt,
        OcclusionDoc(
            size=size,
            stride=stride,
            fill=0.5,
            layer="conv2",
            rows=centres.tolist(),
            cols=centres.tolist(),
            images=occl,
        ),
    )

    # Embedding: t-SNE-like class clusters on a ring; misclassified images drift toward their guess.
    angle = 2 * np.pi * labels / n_classes
    ring = np.stack([np.cos(angle), np.sin(angle)], 1) * 20
    guess = 2 * np.pi * top5[:, 0] / n_classes
    drift = np.stack([np.cos(guess), np.sin(guess)], 1) * 20
    wrong = (top5[:, 0] != labels)[:, None]
    xy = np.where(wrong, 0.6 * ring + 0.4 * drift, ring) + rng.normal(0, 3.0, ring.shape)
    store.write_analysis(
        net,
        ckpt,
        EmbeddingDoc(
            method="tsne",
            dim=by_name["fc6"].units,
            x=np.round(xy[:, 0], 4).tolist(),
            y=np.round(xy[:, 1], 4).tolist(),
            labels=labels.tolist(),
            predicted=top5[:, 0].tolist(),
        ),
    )

    # Invariance: the first layer moves away fast, the top layer slowly; probabilities sag.
    picks = probe_picks(labels, INVARIANCE_IMAGES)
    sweeps = {
        "translation": ("px", [float(t) for t in range(-8, 9)], 8.0, False),
        "rotation": ("deg", [float(a) for a in range(0, 360, 15)], 180.0, True),
        "scale": ("x", [0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4], 0.4, False),
    }
    kinds = {}
    for kind, (unit_name, amounts, span, periodic) in sweeps.items():
        a = np.asarray(amounts)
        d = np.abs(a - (1.0 if kind == "scale" else 0.0)) / span
        if periodic:
            d = np.minimum(a, 360 - a) / span
        rel = np.stack(
            [
                np.stack(
                    [np.clip(d ** (0.5 if li == 0 else 1.2), 0, 1) * g * rng.uniform(0.8, 1.2) for _ in picks]
                )
                for li, g in enumerate((1.3, 0.45))
            ]
        )
        base = np.array([_prob_of(i, int(labels[i]), top5, top5_prob) for i in picks])
        prob = base[:, None] * (1 - 0.7 * d[None, :] ** 1.5 * rng.uniform(0.6, 1.0, (len(picks), 1)))
        kinds[kind] = InvarianceKind(
            unit=unit_name,
            amounts=amounts,
            relative=np.round(rel, 4).tolist(),
            true_prob=np.round(prob, 4).tolist(),
        )
    store.write_analysis(
        net,
        ckpt,
        InvarianceDoc(
            layers=list(INVARIANCE_LAYERS), images=picks, labels=labels[picks].tolist(), kinds=kinds
        ),
    )

    # Stroke density and complexity, measured on the probe images; Spearman per layer.
    ink_share = np.array([(img[..., 0] < 255 - 64).mean() for img in images])
    png_size = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img).convert("L").save(buf, "PNG", optimize=False)
        png_size.append(len(buf.getvalue()))
    n = np.bincount(labels, minlength=n_classes)
    density = np.array([ink_share[labels == c].mean() for c in range(n_classes)])
    complexity = np.array([np.mean(np.asarray(png_size)[labels == c]) for c in range(n_classes)])
    store.write_analysis(
        net,
        ckpt,
        StrokeDoc(
            kind="sketch",
            density=np.round(density, 5).tolist(),
            complexity=np.round(complexity, 5).tolist(),
            n=n.tolist(),
            rho_density={lay: _spearman(w, density) for lay, w in weighted.items()},
            rho_complexity={lay: _spearman(w, complexity) for lay, w in weighted.items()},
            rho_overall=_spearman(overall_preference(list(weighted.values())), density),
        ),
    )

    # Feature visualization of conv2's shown units: coloured oriented gratings under a soft blob.
    units = shown.get(FEATVIS_LAYER, [])
    f = FEATVIS_SIZE
    yy, xx = np.mgrid[0:f, 0:f] / f
    cache: dict[int, bytes] = {}
    for u in units:
        key = u % distinct_sprites if distinct_sprites else u
        if key not in cache:
            theta, freq = key * 0.7, 3 + key % 5
            wave = np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + key)
            hue = np.array(
                [0.5 + 0.5 * np.sin(key), 0.5 + 0.5 * np.sin(key + 2.1), 0.5 + 0.5 * np.sin(key + 4.2)]
            )
            env = 0.55 + 0.45 * _blob(f, (f / 2, f / 2), f / 3)
            rgb = 0.5 + 0.5 * wave[..., None] * env[..., None] * (hue * 2 - 1)
            cache[key] = codecs.encode_webp(np.clip(rgb * 255, 0, 255).astype(np.uint8))
        path = out / FeatVisDoc.image(FEATVIS_LAYER, u)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(cache[key])
    start = rng.uniform(0.1, 0.6, len(units))
    store.write_analysis(
        net,
        ckpt,
        FeatVisDoc(
            size=f,
            seed=0,
            steps=128,
            lr=0.05,
            param="fourier",
            decorrelate=True,
            grayscale=False,
            transforms=True,
            tv=0.0,
            l2=0.0,
            layers={
                FEATVIS_LAYER: FeatVisLayer(
                    units=list(units),
                    objective=np.round(start * rng.uniform(8, 20, len(units)), 4).tolist(),
                    start_objective=np.round(start, 4).tolist(),
                )
            },
        ),
    )

    # Empirical RF of the first shown conv2 units: a blob a little smaller than the analytic RF.
    lay = by_name[ERF_LAYER]
    side = lay.rf_size + ERF_OCCLUDER - 1 + 2 * (ERF_STRIDE - 1)
    got = {}
    for u in shown.get(ERF_LAYER, [])[:ERF_UNITS]:
        c = (side - 1) / 2
        centroid = rng.normal(0, 1.2, 2)
        m = _blob(side, (c + centroid[0], c + centroid[1]), lay.rf_size / 5) + rng.random((side, side)) * 0.08
        peak = float(m.max())
        name = f"erf/{ERF_LAYER}/unit-{u:04d}.png"
        store.write_png(out / name, _viridis(m / peak))
        got[str(u)] = ErfUnit(
            png=name,
            map_size=side,
            analytic_size=lay.rf_size,
            effective_size=round(float(lay.rf_size * rng.uniform(0.5, 0.8)), 2),
            centroid=[round(float(x), 2) for x in centroid],
            mass=0.9,
            images=9,
            peak=round(peak, 5),
        )
    store.write_analysis(net, ckpt, ErfDoc(occluder=ERF_OCCLUDER, stride=ERF_STRIDE, layers={ERF_LAYER: got}))
    return list(TECHNIQUES)


# --- activation distributions (issue 15) -------------------------------------------------------------


def add_distribution(root: Path, net: str = "tiny-alex", ckpt: str = "epoch-2", *, seed: int = 0) -> Path:
    """Give one checkpoint a synthetic ``activations.npy`` and the ``distribution.json`` computed from it
    by :mod:`sitegen.analyses.distribution` (numpy only), listed in its manifest.

    The activations follow the stored top-k: unit ``u``'s rank-r image gets ``k + 1 - r`` (plus 1), the
    others a half-normal draw below 1, set to 0 for ~60 % of the images; conv2 unit 0 is dead (all 0)
    and conv2 unit 1 fires on its rank-1 image only (rarely firing: ``rare`` is 5 % here). ``prob``
    holds softmax-like values.
    """
    import json as _json

    from sitegen.analyses import distribution
    from sitegen.spec import DistributionSpec

    store = Store(root)
    m = store.read_manifest(net, ckpt)
    rec = store.read_network(net)
    ds = store.read_dataset(rec.dataset)
    labels = np.load(store.dataset_dir(rec.dataset) / "labels.npy")
    mined = store.read_arrays(net, ckpt, "mined")
    rng = np.random.default_rng([seed, 15])
    n = len(labels)
    kinds = {lay.name: lay.kind for lay in rec.layers}
    p = DistributionSpec(rare=0.05)  # 48 probe images: one image is 2 %
    result_layers = {}
    offsets, units_of, blocks = {}, {}, []
    col = 0
    for name in m.layers:
        images = mined[f"{name}/images"]
        units, k = images.shape
        x = np.abs(rng.normal(0, 0.4, (n, units)))
        if kinds[name] != "prob":
            x[rng.random((n, units)) < 0.6] = 0
        for u in range(units):
            keep = images[u][images[u] >= 0]
            x[keep, u] = (k + 1 - np.arange(len(keep))) + 1.0
        if name == "conv2":
            x[:, 0] = 0
            x[:, 1] = 0
            keep = images[1][images[1] >= 0][:1]
            x[keep, 1] = 2.0
        if kinds[name] == "prob":
            x = x / x.sum(1, keepdims=True)
        x16 = x.astype(np.float16)
        blocks.append(x16)
        offsets[name], units_of[name] = col, units
        col += units
        tl = np.where(images >= 0, labels[np.clip(images, 0, None)], -1)
        result_layers[name] = distribution.layer_scores(
            x16, kinds[name], labels, len(ds.class_names), images, tl, list(m.shown_units.get(name, [])), p
        )
    ck_dir = store.checkpoint_dir(net, ckpt)
    np.save(ck_dir / "activations.npy", np.concatenate(blocks, axis=1))
    (ck_dir / "activations.json").write_text(
        _json.dumps({"format": 1, "file": "activations.npy", "offsets": offsets, "units": units_of}),
        encoding="utf-8",
    )

    def picture(i: int) -> np.ndarray:
        return np.asarray(Image.open(store.image_path(rec.dataset, i)).convert("RGB"))

    result = distribution.Result(images=n, params=p, layers=result_layers)
    store.write_analysis(net, ckpt, distribution.document(result, picture, ck_dir))
    store.write_manifest(m.model_copy(update={"techniques": [*m.techniques, "distribution"]}))
    return root
