"""Deconvnet, guided-backprop and gradient reconstructions of single units.

A reconstruction projects one unit's activation back to input pixels (Zeiler & Fergus 2013, section
2.1): the backward pass starts from the unit's activation at one position (every other activation of
the layer set to zero), max-pools route the signal by their forward switches, convolutions are applied
transposed, and the three methods differ only at the ReLUs:

- ``deconvnet`` (Zeiler & Fergus): ``relu(signal)``, whatever the sign of the forward input;
- ``guided`` (Springenberg et al. 2015): ``relu(signal)`` where the forward input was positive;
- ``gradient`` (Simonyan et al. 2014): the plain gradient, ``signal`` where the forward input was positive.

Autograd does the routing and the transposed convolutions; :mod:`sitegen.analyses._hooks` swaps the
ReLU backward (``nn.ReLU`` modules only: a functional ReLU raises ``ModelError`` for deconvnet/guided).
On plain conv/pool/ReLU chains the same backward may instead run explicitly (:class:`._cone._Cone`).
The backward is seeded with the unit's activation *value*, so a reconstruction equals captum's
``NeuronDeconvolution`` / ``NeuronGuidedBackprop`` / ``NeuronGradient`` (which seed with 1) times
that value: a strong activation projects to a strong picture.

Speed (shared/PERFORMANCE.md: captum took 22–29 ms per (unit, image) call on alexnet, mostly
computing what a single unit never sees):

- the forward stops at the target layer (the classifier is never run);
- many (unit, image) pairs share one forward/backward;
- a reconstruction is zero outside the unit's receptive field, so each pair runs on a crop of the
  input to that field (exact; see :mod:`sitegen.analyses._crop`), crops of one shape batched together
  (with many pairs, border crops are lengthened to a few shared shapes so that they batch). Crops
  need the network up to the target to be a chain of conv/pool/pointwise modules (checked on one
  traced forward per call); otherwise, and for linear/prob layers, the whole image is used;
- whole-image pairs (linear and prob layers, or no crop chain) share one forward per distinct image
  and run many units' backward signals in one batched backward: a batch of images is forwarded with
  its graph retained, and each backward round seeds one pair of every image of the batch
  (:meth:`_Engine._whole`, batches from :func:`_schedule`); that is the bare batched backward, plus
  one forward per image. ``reconstruct_topk`` feeds those layers image block by image block (each
  distinct image loaded and forwarded once for every unit that ranks it, memory bounded by
  ``_IMAGE_BLOCK`` images): 36,864 fc6 pairs over 3,040 images take about 3,100 forwards (a random
  table), not 36,864;
- a strided conv's input gradient (oneDNN's slow transposed conv, alexnet's conv1) is computed as a
  stride-1 conv plus a pixel shuffle, on crops and whole images alike
  (:func:`sitegen.analyses._phase.phase_backward`: equal up to float rounding, about 3x faster for
  that conv; alexnet's whole-image fc6 backward 10 ms a pair instead of 13);
- when many pairs share an image (a probe image's top channels in every layer), a crop forward per
  pair repeats work: each distinct image is then forwarded once, recording the max-pool switches,
  and each pair's backward runs without autograd on its receptive-field cone only (:class:`_Cone`,
  chosen by an estimate of the conv multiply-adds of both ways; ``shared_forward`` forces either).

Conv layers at seed scale stay on the crop path (issue 13, item 2; alexnet, 160 classes, 3,040 probe
images, every conv unit: 10,368 conv1..conv5 pairs on 2,388 distinct images). Forwarding each distinct
image once for every conv layer and running cone backwards was measured and is slower: a whole 224 px
forward up to conv5 costs about the multiply-adds of the crops of the ~4 pairs an image has (a conv5
crop is 163 px), and the cones saved at most ~20 % of the autograd backward (one thread, CPU seconds:
conv3 whole forwards 17.8 + cones 3.3 against crop forwards 4.4 + backwards 3.9; conv2 8.9 + 0.4
against 0.3 + 0.3). A crop forward costs about what its backward does, so forward + backward, about
2x the bare backward, is that path's floor; what remains above it is loading (uint8 pixels, converted
once a block: ``reconstruct_topk``'s ``pixels``) and drawing the tiles.

benchmarks/reconstruct.py measures it (shared 2-core CPU). ``--part c``, against the bare batched
backward per layer kind (alexnet 224 px, CPU time on one thread of a busy machine): fc6/fc7/fc8/prob
1.08-1.12x of it (1.8x before the shared forward); conv2..conv5 1.6-2.0x, as each conv pair's crop is
forwarded as well as backpropagated (the same multiply-adds), and pairs of one layer rarely share an
image. 14-19x captum per (unit, image) over a whole alexnet atlas (crop path). vgg16's top-3
channels of 13 layers on one image (shared forward, cone backwards: 38 G conv multiply-adds, against
338 G for one backward per feature): 4.9x faster than one retained forward plus one backward per
feature on one thread (2.2 s against 10.6 s), 2.0-3.1x on two threads of a machine that other jobs
kept busy.

Modules, in the order a call goes through them:

- ``_pairs``: :func:`reconstruct` (pairs into a canvas; picks the path);
- ``_topk``: :func:`reconstruct_topk` (a layer's mined top-k as sprite tiles, loading block by block);
- ``_plan``: which module a layer is, and whether its pairs run on crops (:class:`._plan._Planner`);
- ``_engine``: the batched autograd backward of one layer, on crops or whole images;
- ``_cone``, ``_cone_ops``: the shared-forward path, its backward run module by module on the cone;
- ``_tiles``: the contrast stretch, cells and tiles (:func:`to_display`, :class:`TileFile`).
"""

from __future__ import annotations

from sitegen.analyses.reconstruct._engine import DEFAULT_BATCH as DEFAULT_BATCH
from sitegen.analyses.reconstruct._engine import GRAPH_BYTES as GRAPH_BYTES
from sitegen.analyses.reconstruct._pairs import reconstruct
from sitegen.analyses.reconstruct._tiles import DISPLAY_PERCENTILE as DISPLAY_PERCENTILE
from sitegen.analyses.reconstruct._tiles import TileFile as TileFile
from sitegen.analyses.reconstruct._tiles import display_cell, display_peak, to_display
from sitegen.analyses.reconstruct._topk import TILES_IN_RAM as TILES_IN_RAM
from sitegen.analyses.reconstruct._topk import reconstruct_topk

__all__ = ["reconstruct", "reconstruct_topk", "to_display", "display_cell", "display_peak"]
