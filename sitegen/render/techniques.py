"""View models of the literature's other techniques (:mod:`sitegen.techniques` wrote their files).

Reads a checkpoint's ``gradcam.json``, ``occlusion.json``, ``embedding.json``, ``invariance.json``,
``stroke.json``, ``featvis.json`` and ``erf.json`` (those its manifest lists under ``techniques``)
and turns them into plain values and Plotly figures for the network, layer and unit pages. Like the
rest of render: numpy and the store only, never torch.

Site files: Grad-CAM overlays go to ``<net>/gradcam/``; a unit's feature visualization and empirical
receptive field sit beside its page as ``unit-0007-fv.webp`` and ``unit-0007-erf.png``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from sitegen.errors import RenderError
from sitegen.render import charts
from sitegen.render._models import Figure, Img
from sitegen.store import codecs

FORMAT = 1
# CSS px, sized for a projector at 1920 px (issue 14); stylesheets may scale them down on phones
FV_SIZE = 256  # a feature visualization on the unit page
FV_TILE = 112  # ... and on the layer page grid
ERF_SIZE = 224  # an empirical-RF map
GRADCAM_SIZE = 200

_KIND_TITLES = {"translation": "Vertical translation", "rotation": "Rotation", "scale": "Scale"}


@dataclass(frozen=True, slots=True)
class GradCamRow:
    image: Img
    index: int
    label: Any  # views.Chip
    predicted: Any
    correct: bool
    true_prob: str
    pred_prob: str
    true_map: Img
    pred_map: Img


@dataclass(frozen=True, slots=True)
class OcclusionView:
    index: int
    label: Any
    predicted: Any
    correct: bool
    unit: int
    unit_href: str
    max_drops: tuple[str, str, str]  # true-class p, predicted p, unit activation (relative)
    figure: Figure


@dataclass(frozen=True, slots=True)
class NetworkTechniques:
    """Everything the network page shows from the techniques (None / () when not computed)."""

    gradcam_layer: str
    gradcam: tuple[GradCamRow, ...]
    occlusion_note: str
    occlusion: tuple[OcclusionView, ...]
    embedding: Figure | None
    embedding_note: str
    invariance: tuple[Figure, ...]
    invariance_note: str
    stroke: Figure | None
    stroke_overall: Figure | None
    stroke_note: str


@dataclass(frozen=True, slots=True)
class FeatVisTile:
    unit: int
    href: str
    img: Img
    gain: str


@dataclass(frozen=True, slots=True)
class UnitTechniques:
    featvis: Img | None
    featvis_note: str
    erf: Img | None
    erf_box: tuple[str, str]  # (offset %, size %) of the analytic RF square inside the map
    erf_note: str

    @property
    def any(self) -> bool:
        return self.featvis is not None or self.erf is not None


NO_UNIT = UnitTechniques(None, "", None, ("0%", "0%"), "")


class CheckpointTechniques:
    """The technique files of one atlas checkpoint, loaded once, served to its pages."""

    def __init__(self, ck_dir: Path, names: Sequence[str], base: str, add_file: Callable[[str, Path], None]):
        self.dir = ck_dir
        self.base = base
        self.add_file = add_file
        self.docs: dict[str, dict[str, Any]] = {name: self._read(name) for name in names}

    def _read(self, name: str) -> dict[str, Any]:
        path = self.dir / f"{name}.json"
        if not path.is_file():
            raise RenderError(f"{path}: missing; the store is incomplete, rerun `sitegen build`")
        try:
            doc = codecs.read_json(path)
        except (OSError, ValueError) as e:
            raise RenderError(f"{path}: unreadable ({e}); rerun `sitegen build`") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            got = doc.get("format") if isinstance(doc, dict) else None
            raise RenderError(f"{path}: format {got!r}, this sitegen reads format {FORMAT}")
        return doc

    def _file(self, rel: str, site_path: str, doc: str) -> str:
        p = PurePosixPath(rel)
        if p.is_absolute() or ".." in p.parts:
            raise RenderError(f"{self.dir / (doc + '.json')}: file {rel!r} leaves the checkpoint folder")
        src = self.dir / p
        if not src.is_file():
            raise RenderError(f"{src}: missing; the store is incomplete, rerun `sitegen build`")
        self.add_file(site_path, src)
        return site_path

    def _guard(self, name: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise RenderError(
                f"{self.dir / (name + '.json')}: malformed ({type(e).__name__}: {e}); rerun `sitegen build`"
            ) from None

    # -- network page --
    def network(
        self,
        *,
        page_root: str,
        image: Callable[[int, int], Any],
        chips: Sequence[Any],
        class_names: Sequence[str],
        input_size: int,
        layers: Sequence[str],
        weighted: Mapping[str, np.ndarray],
        overall: np.ndarray,
        unit_href: Callable[[str, int], str],
    ) -> NetworkTechniques:
        d = self.docs
        g = self._guard
        gradcam: tuple[GradCamRow, ...] = ()
        gradcam_layer = ""
        if "gradcam" in d:
            gradcam = g("gradcam", lambda: self._gradcam(d["gradcam"], image, chips))
            gradcam_layer = g("gradcam", lambda: str(d["gradcam"]["layer"]))
        occl: tuple[OcclusionView, ...] = ()
        occl_note = ""
        if "occlusion" in d:
            o = d["occlusion"]
            occl = g("occlusion", lambda: self._occlusion(o, page_root, image, chips, input_size, unit_href))
            occl_note = g(
                "occlusion",
                lambda: (
                    f"{int(o['size'])} px grey square, stride {int(o['stride'])} px; unit of {o['layer']}"
                ),
            )
        emb, emb_note = None, ""
        if "embedding" in d:
            e = d["embedding"]
            emb = g(
                "embedding",
                lambda: Figure(
                    "fig-embedding",
                    charts.embedding_scatter(
                        e["x"], e["y"], e["labels"], e["predicted"], class_names, method=str(e["method"])
                    ),
                    540,
                ),
            )
            emb_note = g(
                "embedding",
                lambda: (
                    f"{charts.method_name(str(e['method']))} of the {int(e['dim'])}-dimensional "
                    "penultimate features "
                    f"of {len(e['x'])} images"
                ),
            )
        inv: tuple[Figure, ...] = ()
        inv_note = ""
        if "invariance" in d:
            inv = g("invariance", lambda: self._invariance(d["invariance"], chips))
            inv_note = g("invariance", lambda: ", ".join(str(x) for x in d["invariance"]["layers"]))
        stroke = stroke_all = None
        stroke_note = ""
        if "stroke" in d:
            s = d["stroke"]
            stroke, stroke_all, stroke_note = g(
                "stroke", lambda: self._stroke_network(s, layers, overall, class_names)
            )
        return NetworkTechniques(
            gradcam_layer=gradcam_layer,
            gradcam=gradcam,
            occlusion_note=occl_note,
            occlusion=occl,
            embedding=emb,
            embedding_note=emb_note,
            invariance=inv,
            invariance_note=inv_note,
            stroke=stroke,
            stroke_overall=stroke_all,
            stroke_note=stroke_note,
        )

    def _gradcam(
        self, doc: dict, image: Callable[[int, int], Any], chips: Sequence[Any]
    ) -> tuple[GradCamRow, ...]:
        rows = []
        for e in doc["images"]:
            idx, label, pred = int(e["index"]), int(e["label"]), int(e["predicted"])
            maps = {}
            for which in ("true", "pred"):
                rel = str(e[f"{which}_png"])
                src = self._file(rel, f"{self.base}gradcam/{PurePosixPath(rel).name}", "gradcam")
                cls = chips[label if which == "true" else pred].name
                maps[which] = Img(src, GRADCAM_SIZE, GRADCAM_SIZE, f"Grad-CAM of {cls} on probe image {idx}")
            rows.append(
                GradCamRow(
                    image=image(idx, GRADCAM_SIZE),
                    index=idx,
                    label=chips[label],
                    predicted=chips[pred],
                    correct=label == pred,
                    true_prob=f"{float(e['true_prob']) * 100:.1f}%",
                    pred_prob=f"{float(e['pred_prob']) * 100:.1f}%",
                    true_map=maps["true"],
                    pred_map=maps["pred"],
                )
            )
        return tuple(rows)

    def _occlusion(
        self,
        doc: dict,
        page_root: str,
        image: Callable[[int, int], Any],
        chips: Sequence[Any],
        input_size: int,
        unit_href: Callable[[str, int], str],
    ) -> tuple[OcclusionView, ...]:
        out = []
        layer = str(doc["layer"])
        for j, e in enumerate(doc["images"]):
            idx, label, pred, unit = int(e["index"]), int(e["label"]), int(e["predicted"]), int(e["unit"])
            img = image(idx, GRADCAM_SIZE)
            p_true, p_pred = float(e["base_true_prob"]), float(e["base_pred_prob"])
            act = float(e["base_activation"])
            panels, drops = [], []
            for name, base, z, relative in (
                (f"p({chips[label].name})", p_true, e["true_prob"], False),
                (f"p({chips[pred].name})", p_pred, e["pred_prob"], False),
                (f"{layer} unit {unit}", act, e["activation"], True),
            ):
                values = np.asarray(z, dtype=np.float64)
                drop = (base - values) / (base if base > 0 else 1.0) if relative else base - values
                worst = max(0.0, float(drop.max())) if drop.size else 0.0
                drops.append(worst)
                if relative:
                    title = f"{name}: max drop {worst * 100:.0f}% of {base:.3g}"
                else:
                    title = f"{name}: max drop {worst:.2f} from {base:.2f}"
                panels.append((title, np.round(drop, 4).tolist(), z, "activation" if relative else "p"))
            fig = charts.occlusion_maps(page_root + img.src, input_size, doc["rows"], doc["cols"], panels)
            out.append(
                OcclusionView(
                    index=idx,
                    label=chips[label],
                    predicted=chips[pred],
                    correct=label == pred,
                    unit=unit,
                    unit_href=unit_href(layer, unit),
                    max_drops=(f"{drops[0]:.2f}", f"{drops[1]:.2f}", f"{drops[2] * 100:.0f}%"),
                    figure=Figure(f"fig-occlusion-{j}", fig, 380),
                )
            )
        return tuple(out)

    def _invariance(self, doc: dict, chips: Sequence[Any]) -> tuple[Figure, ...]:
        layers = [str(x) for x in doc["layers"]]
        labels = [int(x) for x in doc["labels"]]
        names = [f"image {int(i)} ({chips[c].name})" for i, c in zip(doc["images"], labels, strict=True)]
        figs = []
        for kind, k in doc["kinds"].items():
            spec = charts.invariance_curves(
                _KIND_TITLES.get(kind, kind),
                str(k["unit"]),
                k["amounts"],
                layers,
                k["relative"],
                k["true_prob"],
                names,
                labels,
            )
            figs.append(Figure(f"fig-invariance-{kind}", spec, 320))
        return tuple(figs)

    def _stroke_network(
        self, s: dict, layers: Sequence[str], overall: np.ndarray, class_names: Sequence[str]
    ) -> tuple[Figure, Figure, str]:
        label = "ink density" if s["kind"] == "sketch" else "edge density"
        rd, rc = s["rho_density"], s["rho_complexity"]
        corr = charts.density_correlation(
            layers, [rd.get(lay) for lay in layers], [rc.get(lay) for lay in layers], density_label=label
        )
        scatter = charts.density_scatter(
            s["density"],
            overall,
            class_names,
            x_title=f"{label} of the class (%)",
            y_title="mean share of a layer's score (%)",
            rho=s["rho_overall"],
        )
        note = (
            f"{label}: share of {'non-background' if s['kind'] == 'sketch' else 'edge'} pixels per image, "
            "averaged per class over the probe set; complexity: mean PNG-compressed size"
        )
        return Figure("fig-stroke-corr", corr, 320), Figure("fig-stroke-overall", scatter, 360), note

    # -- layer page --
    def layer_stroke(self, layer: str, weighted: np.ndarray, class_names: Sequence[str]) -> Figure | None:
        s = self.docs.get("stroke")
        if s is None:
            return None

        def make() -> Figure:
            label = "ink density" if s["kind"] == "sketch" else "edge density"
            spec = charts.density_scatter(
                s["density"],
                weighted,
                class_names,
                x_title=f"{label} of the class (%)",
                rho=s["rho_density"].get(layer),
            )
            return Figure("fig-stroke", spec, 360)

        return self._guard("stroke", make)

    def featvis_tiles(
        self, layer: str, folder: str, unit_href: Callable[[int], str]
    ) -> tuple[FeatVisTile, ...]:
        fv = self.docs.get("featvis")
        if fv is None:
            return ()

        def make() -> tuple[FeatVisTile, ...]:
            if layer not in fv["layers"]:
                return ()
            info = fv["layers"][layer]
            return tuple(
                FeatVisTile(
                    int(u), unit_href(int(u)), self._fv_img(layer, folder, int(u), FV_TILE), f"{float(o):.3g}"
                )
                for u, o in zip(info["units"], info["objective"], strict=True)
            )

        return self._guard("featvis", make)

    def _fv_img(self, layer: str, folder: str, unit: int, size: int) -> Img:
        src = self._file(
            f"featvis/{layer}/unit-{unit:04d}.webp", f"{folder}unit-{unit:04d}-fv.webp", "featvis"
        )
        return Img(src, size, size, f"unit {unit}: image optimized to excite it")

    # -- unit page --
    def unit(self, layer: str, unit: int, folder: str) -> UnitTechniques:
        fv_img, fv_note = None, ""
        if "featvis" in self.docs:
            fv_img, fv_note = self._guard("featvis", lambda: self._unit_featvis(layer, unit, folder))
        erf_img, box, erf_note = None, ("0%", "0%"), ""
        if "erf" in self.docs:
            erf_img, box, erf_note = self._guard("erf", lambda: self._unit_erf(layer, unit, folder))
        return UnitTechniques(fv_img, fv_note, erf_img, box, erf_note)

    def _unit_featvis(self, layer: str, unit: int, folder: str) -> tuple[Img | None, str]:
        fv = self.docs["featvis"]
        info = fv["layers"].get(layer)
        if info is None or unit not in info["units"]:
            return None, ""
        j = list(info["units"]).index(unit)
        start, final = float(info["start_objective"][j]), float(info["objective"][j])
        note = f"mean activation {start:.3g} → {final:.3g} after {fv['steps']} steps"
        note += f" ({fv['param']}, {fv['size']} px)"
        return self._fv_img(layer, folder, unit, FV_SIZE), note

    def _unit_erf(self, layer: str, unit: int, folder: str) -> tuple[Img | None, tuple[str, str], str]:
        erf = self.docs["erf"]
        e = erf["layers"].get(layer, {}).get(str(unit))
        if e is None:
            return None, ("0%", "0%"), ""
        src = self._file(str(e["png"]), f"{folder}unit-{unit:04d}-erf.png", "erf")
        s, a = int(e["map_size"]), int(e["analytic_size"])
        box = (f"{100 * (s - a) / 2 / s:.2f}%", f"{100 * a / s:.2f}%")
        note = (
            f"{float(e['effective_size']):.0f} px holds {float(e['mass']) * 100:.0f}% of the discrepancy "
            f"(analytic RF {a} px; map {s} px, {e['images']} images, occluder {erf['occluder']} px)"
        )
        return Img(src, ERF_SIZE, ERF_SIZE, f"unit {unit}: empirical receptive field"), box, note


__all__ = [
    "CheckpointTechniques",
    "FeatVisTile",
    "GradCamRow",
    "NO_UNIT",
    "NetworkTechniques",
    "OcclusionView",
    "UnitTechniques",
]
