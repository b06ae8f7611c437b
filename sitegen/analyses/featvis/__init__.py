"""Feature visualization by optimization: for each unit, an image that maximizes its mean activation.

Activation maximization (Erhan et al. 2009, "Visualizing Higher-Layer Features of a Deep Network")
with the regularizers of Mordvintsev, Olah et al. (2015 "Inceptionism", 2017 "Feature Visualization",
Distill) as implemented in Lucid / lucent:

- **Parametrization.** ``"fourier"`` (default): the image is a scaled spectrum, ``irfft2`` of
  ``spectrum * 1 / max(|f|, 1/size)`` (lucent ``param/spatial.py`` ``fft_image``: whitened
  frequencies so that gradient steps do not favour high-frequency noise), divided by Lucid's
  "magic" constant 4. ``"pixel"``: one free value per pixel (pre-sigmoid), and a 3×3 Gaussian
  blur (σ = 0.5 px) after the sigmoid, part of the forward so it is differentiable (the blur
  regularizer of Yosinski et al. 2015, "Understanding Neural Networks Through Deep Visualization").
- **Colour decorrelation** (``decorrelate=True``): the three channels are mixed by the square root of
  ImageNet's colour correlation matrix (lucent ``param/color.py``), then squashed to [0, 1] by a
  sigmoid. The [0, 1] image goes through ``LoadedModel.normalize`` like any probe image. With
  ``grayscale=True`` one grey channel is optimized and repeated (sketch networks).
- **Transformation robustness** (``transforms=True``, lucent ``transform.standard_transforms`` made
  cheap): each step every image is jittered by up to ±6 px per 128 px, scaled by one of 0.90 … 1.10
  and rotated by one of −10 … 10 degrees (0 five times as likely as the others, as in lucent), in ONE
  ``affine_grid``/``grid_sample`` per step; what moves in from outside the image is grey (0.5,
  lucent's ``pad(constant_value=0.5)``). The model sees ``size × size`` pixels: no upsampling to
  224 px (lucent upsamples, runs the whole network and leaves its weights trainable: 9.6× slower
  per unit-step, shared/PERFORMANCE.md).
- Optional total-variation (``tv``) and L2-towards-grey (``l2``) penalties on the [0, 1] image
  (Mahendran & Vedaldi 2015; Simonyan et al. 2014).

Optimizer: Adam (Kingma & Ba 2015), element-wise (torch's fused kernel). Defaults: 128 steps at lr 0.1
(lucent's ``render_vis``: 512 at 0.05); on the doodles AlexNet at 64 px they reach 85-97 % of the
activation of 256 steps at 0.05 in half the time. Use more steps for large images. Every ``nn.ReLU``
of the model uses Lucid's *redirected* ReLU gradient (:class:`._grad._RedirectedReLU`), so units that are
off on the initial grey image still start moving.

The objective of a conv (or block/pool) unit is the MEAN of its channel over all positions (lucent
``objectives.channel``); of a linear unit its neuron; of a ``prob`` unit the class *logit* (the input
of the softmax), as Simonyan et al. 2014 recommend: raising a softmax probability is easiest by
lowering the other classes.

**Batched, and identical to one unit at a time.** All units of a chunk are optimized together: the
batch axis is the unit axis, and each batch element's loss is its own unit's activation. The loss is
the SUM over the batch, so each element's gradient is exactly its single-unit gradient; Adam is
element-wise, and the model runs in eval mode, so batch elements never interact. Randomness is drawn
per unit from ``numpy.random.default_rng([seed, unit])``: first the initial parameters, then the
transform parameters of every step. A unit's image therefore depends only on ``(seed, unit)`` and the
options, never on which other units share its chunk or on ``batch_units`` (up to float rounding of
batched vs single convolutions).

The forward stops right after the target layer (:func:`sitegen.analyses._hooks.truncated`); the model's
parameters are frozen (``requires_grad_(False)``: no weight gradients) and its ``requires_grad`` flags,
train/eval mode, ReLU and max-pool forwards and hooks are restored on exit, even on error. The model
is moved to ``device`` and stays there (as in :func:`sitegen.mine.mine`).

**Speed** (each exact up to float rounding; ``benchmarks/featurevis.py``, alexnet conv5 at 128 px):

- *Own channel* (``own_channel=True``): when the layer is an ``nn.Conv2d`` or an ``nn.ReLU`` fed
  directly by one, the forward stops at that conv's input and each image gets only its own unit's
  output channel of the conv (:class:`._grad._OwnChannel`; alexnet conv5: 1 of 256 channels).
- Strided convs (alexnet conv1, 11×11 stride 4) get their input gradient by phases
  (:func:`sitegen.analyses._phase.phase_backward`, ~4x faster than oneDNN's).
- ``nn.MaxPool2d`` runs its forward in channels-last layout and its backward in NCHW
  (:class:`._grad._MaxPool`: the same maxima and argmax, each direction in its ~5-10x faster layout on CPU).
- The redirected ReLU backward is one ``threshold_backward`` pass plus one reduction; colours are
  mixed by a ``matmul`` rather than an ``einsum`` (3x faster); Adam is one fused pass.

The package: :mod:`.visualize` (:func:`featvis`, :class:`FeatVis`: one layer's units), :mod:`._param`
(the image parametrization, transforms and penalties), :mod:`._grad` (the swapped-in forwards and
backwards), :mod:`._optim` (Adam on one chunk of units, the chunk size); this module is the atlas
entry (``run``, ``save``, ``check``: :mod:`sitegen.analyses.registry`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sitegen.analyses.featvis.visualize import PARAMS, FeatVis, featvis
from sitegen.analyses.registry import Context, Problem, pick_layers, rounded
from sitegen.mine import Mined
from sitegen.models.types import LayerInfo
from sitegen.spec import FeatVisSpec
from sitegen.store import codecs
from sitegen.store.formats import FeatVisDoc, FeatVisLayer

__all__ = ["KIND", "PARAMS", "FeatVis", "Params", "Result", "check", "featvis", "run", "save"]


# --- the atlas entry (issue 12: sitegen.analyses.registry) ------------------------------------------

KIND = "featvis"
Params = FeatVisSpec


@dataclass(frozen=True, slots=True)
class Result:
    """Optimized images of the first ``params.units`` shown units of each chosen layer."""

    size: int
    seed: int
    params: FeatVisSpec
    layers: tuple[FeatVis, ...]


def check(params: Params, layers: Sequence[LayerInfo], problem: Problem, network: str) -> None:
    if not isinstance(params.layers, str):
        pick_layers(params.layers, layers, problem, ("analyses", KIND, "layers"), network)


def run(ctx: Context, mined: Mined, params: Params) -> Result | None:
    lm = ctx.loaded
    infos = pick_layers(params.layers, lm.layers, ctx.problem, ("analyses", KIND, "layers"), ctx.network)
    options = params.model_dump(exclude={"enabled", "layers", "units"})  # featvis()'s keyword options
    done = []
    for info in infos:
        units = ctx.shown.get(info.name, [])[: params.units]
        if units:
            done.append(featvis(lm, info, units, seed=ctx.seed, device=ctx.device, **options))
    if not done:
        return None
    return Result(size=int(params.size or lm.input_size), seed=ctx.seed, params=params, layers=tuple(done))


def save(ctx: Context, result: Result, out: Path) -> FeatVisDoc:
    """``featvis/<layer>/unit-0007.webp`` per unit and the document."""
    layers = {}
    for vis in result.layers:
        for u, img in zip(vis.units.tolist(), vis.images, strict=True):
            codecs.write_webp(out / FeatVisDoc.image(vis.layer, u), img, quality=85)  # smooth: q70 bands
        layers[vis.layer] = FeatVisLayer(
            units=vis.units.tolist(),
            objective=rounded(vis.objective, 4),
            start_objective=rounded(vis.start_objective, 4),
        )
    p = result.params
    return FeatVisDoc(
        size=result.size,
        seed=result.seed,
        **p.model_dump(
            include={"steps", "lr", "param", "decorrelate", "grayscale", "transforms", "tv", "l2"}
        ),
        layers=layers,
    )
