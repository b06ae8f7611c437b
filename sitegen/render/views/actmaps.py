"""The network page's activation maps: per probe image of ``actmaps.json``, its predictions and the
strongest channels of each layer (their map images, linked to their unit pages)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from sitegen.errors import RenderError
from sitegen.render._models import Img
from sitegen.render.views.context import LoadedCheckpoint, LoadedDataset, PlanContext
from sitegen.render.views.models import FULL, MAP, ActChannel, ActImage, ActLayer, Bar
from sitegen.store import codecs
from sitegen.store.manifest import LayerRecord

ACTMAPS_FORMAT = 1


def actmaps(
    ctx: PlanContext, ck: LoadedCheckpoint, ds: LoadedDataset, layers: Mapping[str, LayerRecord]
) -> tuple[ActImage, ...]:
    """The checkpoint's activation maps (none unless its manifest says it has them)."""
    if not ck.manifest.activation_maps:
        return ()
    path = ck.dir / "actmaps.json"
    doc = _read(path)
    shown = {lay: set(u) for lay, u in ck.manifest.shown_units.items()}
    out = []
    try:
        for entry in doc["images"]:
            out.append(_image(ctx, ck, ds, layers, shown, entry))
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise RenderError(f"{path}: malformed ({type(e).__name__}: {e}); rerun `sitegen build`") from None
    return tuple(out)


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RenderError(f"{path}: missing; the store is incomplete, rerun `sitegen build`")
    try:
        doc = codecs.read_json(path)
    except (OSError, ValueError) as e:
        raise RenderError(f"{path}: unreadable ({e}); rerun `sitegen build`") from None
    if not isinstance(doc, dict) or doc.get("format") != ACTMAPS_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else None
        raise RenderError(f"{path}: actmaps format {got!r}, this sitegen reads format {ACTMAPS_FORMAT}")
    return doc


def _image(
    ctx: PlanContext,
    ck: LoadedCheckpoint,
    ds: LoadedDataset,
    layers: Mapping[str, LayerRecord],
    shown: Mapping[str, set[int]],
    entry: Any,
) -> ActImage:
    """One probe image of actmaps.json (malformed entries raise KeyError, TypeError, ValueError …)."""
    idx, stored = int(entry["index"]), int(entry["label"])
    if not 0 <= idx < len(ds.labels):
        raise ValueError(f"probe image {idx} out of range (n_probe={len(ds.labels)})")
    # The dataset's labels are the one truth (issue 14: a label of -1, "not given", read
    # as class -1 named every image after the last class); a stored label must agree.
    label = ds.labels[idx]
    if stored not in (-1, label):
        raise ValueError(f"image {idx} has label {stored}, the dataset says {label}")
    preds = tuple(
        Bar(
            ds.rec.class_names[int(c)],
            f"{float(p) * 100:.1f}%",
            round(float(p) * 100, 1),
            ds.chips[int(c)],
        )
        for c, p in entry["top5"]
    )
    act_layers = [_layer(ctx, ck, layers, shown, lay, idx) for lay in entry["layers"]]
    return ActImage(
        image=ctx.image(ds, idx, FULL),
        index=idx,
        label=ds.chips[label],
        correct=bool(entry["top5"]) and int(entry["top5"][0][0]) == label,
        predictions=preds,
        layers=tuple(act_layers),
    )


def _layer(
    ctx: PlanContext,
    ck: LoadedCheckpoint,
    layers: Mapping[str, LayerRecord],
    shown: Mapping[str, set[int]],
    lay: Any,
    idx: int,
) -> ActLayer:
    """One layer's channels on probe image ``idx``."""
    name = str(lay["layer"])
    rec = layers.get(name)
    h, w = (rec.shape[1], rec.shape[2]) if rec is not None and len(rec.shape) == 3 else (1, 1)
    chans = []
    for ch in lay["channels"]:
        c = int(ch["channel"])
        png = PurePosixPath(str(ch["png"]))
        if png.is_absolute() or ".." in png.parts:
            raise ValueError(f"png path {str(png)!r} leaves the checkpoint folder")
        src = f"{ck.base}{png}"
        ctx.files[src] = ck.dir / png
        img = Img(src, MAP, max(1, round(MAP * h / w)), f"{name} channel {c} on probe image {idx}")
        slug_ = ck.layer_slugs.get(name)
        href = f"{ck.base}{slug_}/unit-{c:04d}.html" if slug_ and c in shown.get(name, ()) else ""
        chans.append(ActChannel(c, f"{float(ch['norm']):.3g}", img, href))
    return ActLayer(name, tuple(chans))
