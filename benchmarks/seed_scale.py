"""The lab study at its real scale: a 160-class, 224 px atlas against the machine's own limit.

Issue 13, item 1. In one run:

1. **Data.** Draws (once; cached under ``--data``, default /tmp/sitegen-seed-scale) a sketch-like
   ImageFolder at 224 px: black strokes on white, like the top 160 classes of TU-Berlin. The built-in
   doodles drawer has 16 shapes; each synthetic class composites a fixed pair or triple of them at
   class-specific anchors and scales (a 3x3 grid of anchors, 0.38-0.55 of the image), and every image
   jitters position (+-5 %) and scale (+-10 %) and draws each shape with its own strokes. Deterministic
   in ``--seed``; a stamp file records the parameters, and a folder whose stamp matches is reused.
   Every class folder holds ``probe + 1`` images: the probe split (``probe_fraction``) plus the one
   training image the split insists on (no training happens; normalization is ``imagenet``).
2. **Builds.** For each network (torchvision ``alexnet`` / ``vgg19``, random weights, ``layers: auto``,
   ``units: all`` in full mode) writes a spec (``DIR/runs/<mode>-<net>/spec.yaml``; default analyses,
   featvis and empirical RF off), deletes that run's output, and runs ``sitegen build SPEC --no-render``
   then ``sitegen render SPEC`` as subprocesses: sitegen's own CLI (``sitegen.cli.app``), started by
   this file with ``--child``, which records the process's peak RSS (VmHWM, see ``_own_peak_rss``) and,
   for the build, wraps ``sitegen.build.sprites.reconstruct_topk`` / ``extract_patches`` in a timer to get
   seconds per layer (per-layer keys in the manifest's timings are used instead when present).
   Stage seconds come from the store (``build.json`` and the checkpoint ``manifest.json`` timings);
   site MB per network and layer, bytes per unit and page count from walking ``output/site``.
3. **The limit**, measured in the same run on the same images, after the build (nothing else of
   ours running):

   - forward: the probe set's PNGs decoded with PIL, to tensors, batch 16, channels_last,
     ``torch.inference_mode``, the whole network (mining needs the output too) -> images/s;
   - reconstructions: per layer, a retained forward of 16 images truncated at the layer, then one
     batched autograd backward seeding one unit in each of the 16 (plain gradient: the ReLU rule of
     deconvnet/guided costs the same), timed alone (median of repeats) -> ms per pair. Conv layers run
     on the receptive-field crop: the crop shapes of the build's own pairs (``mined.npz`` boxes) at the
     smallest, median and largest area are timed and each pair is charged by area (linear
     interpolation); fc and prob layers use the whole image. The faster of contiguous and
     channels_last counts. Limit = ms per pair x pairs the build does (shown units x valid top-k
     entries x reconstruction methods).

   ``limit = forward of the probe set + reconstruction limit``. Not in the limit (shown as extra):
   the forwards of the reconstructions' own images (conv crops and fc images), patches, sprites,
   the other techniques (occlusion, Grad-CAM, ...), store writes, render, interpreter start-up.
   The per-layer table also shows those forwards (``fwd s``: the same retained forward, timed
   alone, once per conv pair's crop and once per distinct fc/prob image and method) and the build
   against limit + forwards (``+fwd x``): a crop path can get near 1.0 of that, not of the limit,
   as a crop's forward costs about what its backward does (issue 13, item 2: the notes in
   ``sitegen/analyses/reconstruct/__init__.py`` say why sharing forwards across conv layers does not pay).

Prints, per network, a table of stage seconds, peak RSS, site MB, bytes per unit and pages, then
per layer reconstruction seconds against their limit, and the headline ratio
**whole build (build + render) / limit**. ``--json FILE`` writes everything.

``--rss-sweep`` builds a reduced alexnet atlas (4 units per layer, reconstructions and activation maps
on, Grad-CAM / occlusion / invariance / embedding off: the embedding's features grow with the probe
set by design) at 1,000 and at 10,000 probe images (100 classes) and prints both peak RSS figures and
their ratio (target: within 10 %).

A line is printed at least every 30 s (the build's own log passes through on stderr).

Run::

    python benchmarks/seed_scale.py --quick               # 40 classes x 10 probe, alexnet, fc6/fc7
                                                          #   128 units each: a few minutes on 2 cores
    python benchmarks/seed_scale.py --nets alexnet        # 160 x 19 = 3,040 probe, units: all (~40 min)
    python benchmarks/seed_scale.py                       # alexnet and vgg19 (vgg19 on a CPU: hours)
    python benchmarks/seed_scale.py --rss-sweep           # memory flatness only
    python benchmarks/seed_scale.py --quick --json out.json --device cuda
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HEARTBEAT_S = 30.0
SIZE = 224
BATCH = 16
#: Bump when the drawing below changes pixels (part of the stamp).
DATA_VERSION = 1
_ANCHORS = [(r, c) for r in (0.3, 0.5, 0.7) for c in (0.3, 0.5, 0.7)]


def say(msg: str) -> None:
    print(f"[seed_scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- data ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    name: str
    parts: tuple[tuple[str, tuple[float, float], float], ...]  # (doodle class, (row, col) anchor, scale)


def recipes(n_classes: int, seed: int) -> list[Recipe]:
    """``n_classes`` distinct composites; the first N are the same whatever ``n_classes`` is."""
    from sitegen import doodles

    rng = random.Random(f"seed-scale:{seed}")
    seen: set[frozenset] = set()
    out: list[Recipe] = []
    while len(out) < n_classes:
        n = 2 if rng.random() < 0.6 else 3
        shapes = rng.sample(list(doodles.CLASSES), n)
        spots = rng.sample(_ANCHORS, n)
        scales = [round(rng.uniform(0.38, 0.55), 3) for _ in range(n)]
        sig = frozenset(zip(shapes, spots, strict=True))
        if sig in seen:
            continue
        seen.add(sig)
        out.append(
            Recipe(f"c{len(out):03d}-" + "-".join(shapes), tuple(zip(shapes, spots, scales, strict=True)))
        )
    return out


def draw_image(recipe: Recipe, index: int, size: int, seed: int):  # noqa: ANN201 - a PIL image
    from PIL import Image, ImageChops

    from sitegen import doodles

    rng = random.Random(f"seed-scale:{seed}:{recipe.name}:{index}")
    canvas = Image.new("L", (size, size), 255)
    for shape, (ar, ac), scale in recipe.parts:
        s = max(16, min(size, round(size * scale * rng.uniform(0.9, 1.1))))
        tile = doodles.draw(shape, s, rng)
        top = min(max(0, round((ar + rng.uniform(-0.05, 0.05)) * size - s / 2)), size - s)
        left = min(max(0, round((ac + rng.uniform(-0.05, 0.05)) * size - s / 2)), size - s)
        box = (left, top, left + s, top + s)
        canvas.paste(ImageChops.darker(canvas.crop(box), tile), box)
    return canvas


def _draw_class(args: tuple[Recipe, int, int, int, str]) -> int:
    recipe, n, size, seed, folder = args
    d = Path(folder) / recipe.name
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        draw_image(recipe, i, size, seed).save(d / f"{i}.png")
    return n


def make_dataset(root: Path, n_classes: int, per_class: int, seed: int, workers: int) -> Path:
    """``root/<n_classes>x<per_class>-s<seed>/<class>/<i>.png``, drawn unless its stamp matches."""
    from sitegen import doodles

    folder = root / f"{n_classes}x{per_class}-s{seed}"
    stamp = {
        "version": DATA_VERSION,
        "doodles": doodles.VERSION,
        "classes": n_classes,
        "per_class": per_class,
        "size": SIZE,
        "seed": seed,
    }
    stamp_file = folder / ".stamp.json"
    if stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp:
        say(f"data: {folder} ({n_classes} classes x {per_class}) already made")
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    t0 = last = time.perf_counter()
    jobs = [(r, per_class, SIZE, seed, str(folder)) for r in recipes(n_classes, seed)]
    done = 0
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for n in pool.map(_draw_class, jobs):
            done += n
            if time.perf_counter() - last > HEARTBEAT_S / 2:
                last = time.perf_counter()
                say(f"data: drawn {done}/{n_classes * per_class} images")
    stamp_file.write_text(json.dumps(stamp))
    say(f"data: drew {done} PNGs in {time.perf_counter() - t0:.1f} s -> {folder}")
    return folder


# --- specs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    label: str  # e.g. quick-alexnet
    net: str
    arch: str
    classes: int
    probe: int  # per class
    units: Any
    analyses: dict


ANALYSES_DEFAULT = {"featvis": {"enabled": False}, "empirical_rf": {"enabled": False}}
ANALYSES_SWEEP = {
    "featvis": {"enabled": False},
    "empirical_rf": {"enabled": False},
    "gradcam": {"enabled": False},
    "occlusion": {"enabled": False},
    "invariance": {"enabled": False},
    "embedding": {"enabled": False},
}


def write_spec(run: Run, data: Path, where: Path, device: str) -> Path:
    import yaml

    per_class = run.probe + 1
    # round(per_class * fraction) == probe: one image left for the train split
    fraction = round((run.probe + 0.25) / per_class, 4)
    spec = {
        "title": f"seed scale: {run.label}",
        "output": "output",
        "device": device,
        "seed": 0,
        "datasets": {
            "sketches": {
                "path": str(data),
                "max_per_class": per_class,
                "probe_fraction": fraction,
                "image_size": SIZE,
            }
        },
        "networks": {
            run.net: {
                "arch": run.arch,
                "dataset": "sketches",
                "normalization": "imagenet",
                "layers": "auto",
                "units": run.units,
            }
        },
        "analyses": run.analyses,
    }
    assert round(per_class * fraction) == run.probe
    where.mkdir(parents=True, exist_ok=True)
    path = where / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    from sitegen.spec import load_spec  # every key checked against the schema, now

    load_spec(path)
    return path


# --- subprocesses ----------------------------------------------------------------------------------


@dataclass
class Proc:
    rc: int
    wall: float
    maxrss: int  # bytes
    cpu: float  # user + system seconds
    log: list[tuple[float, str]]


def _vm(pid: int) -> str:
    try:
        fields = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
        )
        now, peak = (int(fields[k].split()[0]) / 1e6 for k in ("VmRSS", "VmHWM"))
        return f"RSS {now:.2f} GB (peak {peak:.2f} GB)"
    except (OSError, KeyError, ValueError):
        return "RSS ?"


def run_proc(cmd: Sequence[str], what: str, cwd: Path | None = None) -> Proc:
    """Run ``cmd``, passing its stderr/stdout through; a heartbeat line every 30 s; own peak RSS."""
    say(f"{what}: {' '.join(cmd)}")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[tuple[float, str]] = []
    last = [time.perf_counter()]

    def pump() -> None:
        assert p.stdout is not None
        for line in p.stdout:
            log.append((time.perf_counter() - t0, line.rstrip("\n")))
            sys.stderr.write("    | " + line)
            sys.stderr.flush()
            last[0] = time.perf_counter()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            say(f"{what}: running {time.perf_counter() - t0:.0f} s, {_vm(p.pid)}")

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    stop.set()
    reader.join(timeout=10)
    p.returncode = os.waitstatus_to_exitcode(status)
    say(f"{what}: exit {p.returncode} after {wall:.1f} s")
    return Proc(p.returncode, wall, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime, log)


def _own_peak_rss() -> int | None:
    """This process's VmHWM in bytes: the peak of its own address space since exec.

    Not ``ru_maxrss``: at exec Linux carries the pre-exec high-water mark over, and a (v)forked child
    of this benchmark starts with the parent's (which holds models and images for the limit).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def child_main(command: str, spec: str, out_json: str) -> None:
    """``sitegen build SPEC --no-render`` (per-layer timers around reconstructions and patches) or
    ``sitegen render SPEC``, recording its own peak RSS in ``out_json``."""
    per: dict[str, Any] = {"reconstructions": {}, "patches": {}, "reconstructions_cpu": {}, "patches_cpu": {}}
    if command == "build":
        import sitegen.build.sprites as sb

        def wrap(fn: Callable, bucket: str) -> Callable:
            def timed(*args: Any, **kwargs: Any) -> Any:
                info = next(
                    (a for a in (*args, *kwargs.values()) if hasattr(a, "rf_size") and hasattr(a, "name")),
                    None,
                )
                t, c = time.perf_counter(), time.process_time()
                try:
                    return fn(*args, **kwargs)
                finally:
                    if info is not None:
                        wall, cpu = per[bucket], per[f"{bucket}_cpu"]
                        wall[info.name] = wall.get(info.name, 0.0) + time.perf_counter() - t
                        cpu[info.name] = cpu.get(info.name, 0.0) + time.process_time() - c

            return timed

        for attr, bucket in (("reconstruct_topk", "reconstructions"), ("extract_patches", "patches")):
            if callable(getattr(sb, attr, None)):
                setattr(sb, attr, wrap(getattr(sb, attr), bucket))
    from sitegen.cli import app

    try:
        app([command, spec] + (["--no-render"] if command == "build" else []), prog_name="sitegen")
    finally:
        per["peak_rss"] = _own_peak_rss()
        Path(out_json).write_text(json.dumps(per))


# --- reading the store and the site ----------------------------------------------------------------


def _read_json(p: Path) -> dict:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def checkpoint_dir(store: Path, net: str) -> Path | None:
    found = sorted((store / "networks" / net).glob("*/manifest.json"))
    return found[-1].parent if found else None


def dir_bytes(p: Path) -> tuple[int, int]:
    """(bytes, files) under ``p``."""
    total = files = 0
    for dirpath, _, names in os.walk(p):
        for n in names:
            try:
                total += os.stat(os.path.join(dirpath, n)).st_size
                files += 1
            except OSError:
                pass
    return total, files


def site_figures(site: Path, net: str, layers: Sequence[str]) -> dict:
    total, files = dir_bytes(site)
    pages = sum(1 for _ in site.rglob("*.html")) if site.exists() else 0
    net_dir = site / net
    net_bytes, _ = dir_bytes(net_dir)
    per_layer = {name: dir_bytes(net_dir / name)[0] for name in layers if (net_dir / name).is_dir()}
    return {
        "bytes": total,
        "files": files,
        "pages": pages,
        "network_bytes": net_bytes,
        "network_own_bytes": net_bytes - sum(per_layer.values()),  # network page, actmaps, gradcam, …
        "shared_bytes": total - net_bytes,  # img/, assets/, index.html, …
        "layer_bytes": per_layer,
    }


# --- the limit -------------------------------------------------------------------------------------


class _Stop(Exception):
    def __init__(self, out: Any) -> None:
        self.out = out


def _probe_files(data: Path, n: int) -> list[Path]:
    """``n`` image files of ``data``, round-robin over the classes (decoding cost is per image)."""
    per = [sorted(d.glob("*.png"), key=lambda p: int(p.stem)) for d in sorted(data.iterdir()) if d.is_dir()]
    out: list[Path] = []
    i = 0
    while len(out) < n:
        for files in per:
            if i < len(files) and len(out) < n:
                out.append(files[i])
        i += 1
    return out


def _decode(paths: Sequence[Path]):  # noqa: ANN202 - uint8 tensor [B, 3, H, W]
    import numpy as np
    import torch
    from PIL import Image

    arr = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    return torch.from_numpy(arr).permute(0, 3, 1, 2)


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_forward(model: Any, files: Sequence[Path], device: Any) -> dict:
    """Bare forward of the probe set, decoding included: batch 16, channels_last, inference mode."""
    import torch

    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
    model = model.to(device, memory_format=torch.channels_last)

    def batch(paths: Sequence[Path]) -> None:
        x = _decode(paths).to(device, non_blocking=True).float().div_(255)
        x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
        torch.softmax(model(x), 1)

    with torch.inference_mode():
        batch(files[:BATCH])  # warm-up
        _sync(device)
        t0 = last = time.perf_counter()
        c0 = time.process_time()
        for i in range(0, len(files), BATCH):
            batch(files[i : i + BATCH])
            if time.perf_counter() - last > HEARTBEAT_S:
                last = time.perf_counter()
                say(f"limit: forward {i + BATCH}/{len(files)} images")
        _sync(device)
        sec, cpu = time.perf_counter() - t0, time.process_time() - c0
    model.to(memory_format=torch.contiguous_format)
    return {"images": len(files), "seconds": sec, "cpu_s": cpu, "images_per_s": len(files) / sec}


def _truncated(model: Any, path: str, kind: str, x: Any) -> Any:
    import torch

    if kind == "prob" or path == "":
        return torch.softmax(model(x), 1)
    handle = model.get_submodule(path).register_forward_hook(lambda m, i, o: (_ for _ in ()).throw(_Stop(o)))
    try:
        model(x)
    except _Stop as s:
        return s.out
    finally:
        handle.remove()
    raise RuntimeError(f"module {path!r} did not run")


def _median_time(fn: Callable[[], Any], device: Any) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fn()`` over at least 3 repeats (up to 25 or 0.5 s)."""
    times: list[float] = []
    cpus: list[float] = []
    spent = 0.0
    while len(times) < 3 or (spent < 0.5 and len(times) < 25):
        _sync(device)
        t, c = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
        spent += times[-1]
    return statistics.median(times), statistics.median(cpus)


def time_backward(
    model: Any, path: str, kind: str, x: Any, units: Sequence[int], device: Any
) -> tuple[float, float, float, float]:
    """Wall and CPU seconds per pair: one batched autograd backward from a retained forward (median of
    repeats; the better of contiguous and channels_last); then the same for that forward itself
    (autograd on, graph built: what the build runs before a backward), not part of the limit."""
    import torch

    best, best_cpu = math.inf, math.inf
    fwd, fwd_cpu = math.inf, math.inf
    for layout in (torch.contiguous_format, torch.channels_last):
        model.to(memory_format=layout)
        xi = x.detach().clone().contiguous(memory_format=layout).requires_grad_(True)
        wall, cpu = _median_time(functools.partial(_truncated, model, path, kind, xi), device)
        fwd, fwd_cpu = min(fwd, wall / x.shape[0]), min(fwd_cpu, cpu / x.shape[0])
        out = _truncated(model, path, kind, xi)
        seed = torch.zeros_like(out)
        b = torch.arange(out.shape[0], device=device)
        u = torch.as_tensor([units[i % len(units)] for i in range(out.shape[0])], device=device)
        if out.dim() == 4:
            seed[b, u, out.shape[2] // 2, out.shape[3] // 2] = 1.0
        else:
            seed[b, u] = 1.0
        torch.autograd.grad(out, xi, seed, retain_graph=True)  # warm-up
        grad = functools.partial(torch.autograd.grad, out, xi, seed, retain_graph=True)
        wall, cpu = _median_time(grad, device)
        best = min(best, wall / out.shape[0])
        best_cpu = min(best_cpu, cpu / out.shape[0])
        del out, seed, xi, grad
    model.to(memory_format=torch.contiguous_format)
    return best, best_cpu, fwd, fwd_cpu


def measure_reconstruction_limit(
    model: Any, layers: Sequence[Any], images: Any, ck_dir: Path | None, device: Any
) -> dict:
    """Per layer: ms per pair (bare batched backward) and the pairs the build did (from its store)."""
    import numpy as np

    manifest = _read_json(ck_dir / "manifest.json") if ck_dir else {}
    methods = len(manifest.get("reconstructions") or []) if manifest else 1
    shown = manifest.get("shown_units") or {}
    mined: dict = {}
    if ck_dir and (ck_dir / "mined.npz").exists():
        with np.load(ck_dir / "mined.npz") as z:
            mined = {k: z[k] for k in z.files if k.endswith(("/images", "/boxes"))}
    out: dict[str, dict] = {}
    for info in layers:
        t0 = time.perf_counter()
        units = shown.get(info.name) or list(range(info.units))
        valid = None
        if f"{info.name}/images" in mined:
            valid = mined[f"{info.name}/images"][units] >= 0
        pairs_per_method = int(valid.sum()) if valid is not None else len(units) * 9
        pairs = pairs_per_method * methods
        rec: dict[str, Any] = {"units": len(units), "pairs": pairs, "methods": methods}
        if info.kind == "conv" and info.rf_size < SIZE:
            if f"{info.name}/boxes" in mined and valid is not None and valid.any():
                boxes = mined[f"{info.name}/boxes"][units][valid].astype(
                    int
                )  # [P, 4] top, left, bottom, right
            else:  # no store: the full box of the centre unit
                h = info.shape[-1] // 2
                c = info.rf_offset + h * info.rf_stride
                lo = max(0, int(math.floor(c - info.rf_size / 2 + 0.5)))
                boxes = np.array([[lo, lo, min(SIZE, lo + info.rf_size), min(SIZE, lo + info.rf_size)]])
            areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            order = np.argsort(areas, kind="stable")
            picks = sorted(
                {int(order[0]), int(order[len(order) // 2]), int(order[-1])}, key=lambda i: areas[i]
            )
            xs: list[int] = []
            ys: list[float] = []
            cs: list[float] = []
            fs: list[float] = []
            shapes: list[list[int]] = []
            for i in picks:
                top, left, bottom, right = (int(v) for v in boxes[i])
                if xs and areas[i] == xs[-1]:
                    continue
                crop = images[:, :, top:bottom, left:right]
                xs.append(int(areas[i]))
                wall, cpu, fwd, _ = time_backward(model, info.module, info.kind, crop, units, device)
                ys.append(wall)
                cs.append(cpu)
                fs.append(fwd)
                shapes.append([bottom - top, right - left])
            per_pair = float(np.interp(areas, xs, ys).mean()) if len(xs) > 1 else ys[0]
            per_pair_cpu = float(np.interp(areas, xs, cs).mean()) if len(xs) > 1 else cs[0]
            # each conv pair's crop is forwarded once (a forward per pair, as the build's crop path)
            forwards = float(np.interp(areas, xs, fs).mean()) * pairs if len(xs) > 1 else fs[0] * pairs
            rec.update(crop_shapes=shapes, crop_ms=[y * 1e3 for y in ys], mean_crop_area=float(areas.mean()))
        else:
            per_pair, per_pair_cpu, fwd, _ = time_backward(
                model, info.module, info.kind, images, units, device
            )
            # whole images: one forward per distinct image and method (the build shares them)
            distinct = pairs_per_method
            if valid is not None:
                distinct = len(np.unique(mined[f"{info.name}/images"][units][valid]))
            forwards = fwd * distinct * methods
        rec["ms_per_pair"] = per_pair * 1e3
        rec["cpu_ms_per_pair"] = per_pair_cpu * 1e3
        rec["limit_s"] = per_pair * pairs
        rec["limit_cpu_s"] = per_pair_cpu * pairs
        rec["forwards_s"] = forwards  # not in the limit: shown as a second reference
        out[info.name] = rec
        say(
            f"limit: {info.name}: {per_pair * 1e3:.3f} ms/pair x {pairs} pairs = {rec['limit_s']:.1f} s "
            f"(measured in {time.perf_counter() - t0:.1f} s)"
        )
    return out


def measure_limit(
    arch: str, num_classes: int, data: Path, n_probe: int, ck_dir: Path | None, device_name: str
) -> dict:
    import torch

    from sitegen.models import build_model, layer_table

    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_name)
    torch.manual_seed(0)
    model = build_model(arch, num_classes).eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    layers = layer_table(model, SIZE, "auto")
    files = _probe_files(data, n_probe)
    say(f"limit: bare forward of {len(files)} probe PNGs on {device} (decode + batch {BATCH}, channels_last)")
    fwd = measure_forward(model, files, device)
    say(f"limit: forward {fwd['images_per_s']:.1f} images/s ({fwd['seconds']:.1f} s)")
    x = _decode(files[:BATCH]).to(device).float().div_(255)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
    x = (x - mean) / std
    rec = measure_reconstruction_limit(model, layers, x, ck_dir, device)
    recon = sum(r["limit_s"] for r in rec.values())
    recon_cpu = sum(r["limit_cpu_s"] for r in rec.values())
    return {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "forward": fwd,
        "reconstructions": rec,
        "reconstruction_limit_s": recon,
        "limit_s": fwd["seconds"] + recon,
        "reconstruction_limit_cpu_s": recon_cpu,
        "limit_cpu_s": fwd["cpu_s"] + recon_cpu,
    }


# --- one network -----------------------------------------------------------------------------------


def build_one(run: Run, data: Path, root: Path, device: str, measure: bool = True) -> dict:
    where = root / "runs" / run.label
    spec = write_spec(run, data, where, device)
    out = where / "output"
    if out.exists():
        shutil.rmtree(out)  # from scratch: a matching store would be "cached"
    timers = where / "layer_timers.json"
    timers.unlink(missing_ok=True)
    me = str(Path(__file__).resolve())
    b = run_proc([sys.executable, me, "--child", "build", str(spec), str(timers)], f"build {run.label}")
    res: dict[str, Any] = {
        "label": run.label,
        "net": run.net,
        "arch": run.arch,
        "spec": str(spec),
        "build": {"rc": b.rc, "wall_s": b.wall, "cpu_s": b.cpu, "peak_rss": b.maxrss},
    }
    res["layer_timers"] = _read_json(timers)
    res["build"]["peak_rss"] = res["layer_timers"].pop("peak_rss", None) or b.maxrss
    if b.rc != 0:
        res["error"] = "\n".join(line for _, line in b.log[-15:])
        return res
    rss_file = where / "render_rss.json"
    r = run_proc([sys.executable, me, "--child", "render", str(spec), str(rss_file)], f"render {run.label}")
    res["render"] = {
        "rc": r.rc,
        "wall_s": r.wall,
        "cpu_s": r.cpu,
        "peak_rss": _read_json(rss_file).get("peak_rss") or r.maxrss,
    }
    for _, line in r.log:
        if line.strip().startswith("rendered"):
            try:
                res["render"]["reported_s"] = float(line.split(" in ")[1].split("s")[0])
            except (IndexError, ValueError):
                pass
    store = out / "store"
    build_json = _read_json(store / "build.json")
    ck = checkpoint_dir(store, run.net)
    manifest = _read_json(ck / "manifest.json") if ck else {}
    dataset = _read_json(store / "datasets" / "sketches" / "dataset.json")
    res["n_probe"] = dataset.get("n_probe")
    res["classes"] = len(dataset.get("class_names") or []) or run.classes
    res["build_timings"] = build_json.get("timings", {})
    res["stage_timings"] = manifest.get("timings", {})
    res["shown_units"] = {k: len(v) for k, v in (manifest.get("shown_units") or {}).items()}
    # per-layer keys in the manifest, if the build records them, win over the wrapper's
    for stage in ("reconstructions", "patches"):
        own = {
            layer: v
            for k, v in res["stage_timings"].items()
            for layer in res["shown_units"]
            if isinstance(v, (int, float))
            and k in (f"{stage}/{layer}", f"{stage} {layer}", f"{stage}:{layer}")
        }
        if own:
            res["layer_timers"][stage] = own
    res["site"] = site_figures(out / "site", run.net, list(res["shown_units"]))
    if measure:
        n_probe = int(res["n_probe"] or run.classes * run.probe)
        res["limit"] = measure_limit(run.arch, res["classes"], data, n_probe, ck, device)
    return res


# --- printing --------------------------------------------------------------------------------------


#: The analysis kinds issue 15 added (their manifest timings are summed against its 25 % budget).
ISSUE_15_KINDS = ("distribution", "classes", "similar", "effect", "masks")


def _mb(b: float) -> str:
    return f"{b / 1e6:.1f}"


def print_network(res: dict) -> None:
    print(
        f"\n== {res['label']}: {res['arch']}, {res.get('classes')} classes, "
        f"{res.get('n_probe')} probe images, "
        f"{sum(res.get('shown_units', {}).values())} shown units =="
    )
    if "error" in res:
        print(f"BUILD FAILED (exit {res['build']['rc']}):\n{res['error']}")
        return
    st, bt = res["stage_timings"], res["build_timings"]
    rows: list[tuple[str, str]] = []
    for k, v in bt.items():
        rows.append((f"build.json: {k}", f"{v:.1f}"))
    for k, v in st.items():
        if isinstance(v, (int, float)):
            rows.append((f"  {k}", f"{v:.1f}"))
    net_s = bt.get(f"network {res['net']}")
    if net_s is not None:
        other = net_s - sum(v for k, v in st.items() if isinstance(v, (int, float)) and "/" not in k)
        rows.append(("  other (load, sprites, store writes)", f"{other:.1f}"))
    rows.append(("build process wall (start-up included)", f"{res['build']['wall_s']:.1f}"))
    rows.append(("render process wall", f"{res['render']['wall_s']:.1f}"))
    whole = res["build"]["wall_s"] + res["render"]["wall_s"]
    rows.append(("whole build (build + render)", f"{whole:.1f}"))
    rows.append(("  its CPU time (all threads)", f"{res['build']['cpu_s'] + res['render']['cpu_s']:.1f}"))
    w = max(len(a) for a, _ in rows)
    print(f"{'stage'.ljust(w)}  seconds")
    for a, b in rows:
        print(f"{a.ljust(w)}  {b:>7}")
    # issue 15 ("find and explain units"): its analyses may cost at most 25 % of the build
    found = {k: float(v) for k, v in st.items() if k in ISSUE_15_KINDS and isinstance(v, (int, float))}
    if found and whole:
        spent = sum(found.values())
        print(
            f"issue 15's analyses ({', '.join(found)}): {spent:.1f} s = {100 * spent / whole:.1f} % "
            "of the whole build (target <= 25 %; mining's per-image activations and the pages not included)"
        )
    s = res["site"]
    units = sum(res["shown_units"].values())
    print(
        f"peak RSS: build {res['build']['peak_rss'] / 1e9:.2f} GB, "
        f"render {res['render']['peak_rss'] / 1e9:.2f} GB"
    )
    print(
        f"site: {_mb(s['bytes'])} MB, {s['files']} files, {s['pages']} pages; "
        f"network folder {_mb(s['network_bytes'])} MB "
        f"({s['network_bytes'] / max(units, 1) / 1e3:.1f} KB/unit), "
        f"shared (img/, assets/, …) {_mb(s['shared_bytes'])} MB, "
        f"network pages/techniques {_mb(s['network_own_bytes'])} MB"
    )
    lim = res.get("limit")
    timers = res["layer_timers"].get("reconstructions", {})
    timers_cpu = res["layer_timers"].get("reconstructions_cpu", {})

    def ratio(a: float | None, b: float | None) -> str:
        if a is None or not b:
            return "n/a"
        return f"{a / b:.2f}" if a / b < 100 else f"{a / b:.0f}"

    print(
        "per layer: reconstruction seconds in the build (wall) against the limit; x = build / limit "
        "(wall and CPU time); +fwd x = build / (limit + the bare forwards the build cannot share: "
        "a crop per conv pair, an image per fc/prob image and method; a reference, not the limit)"
    )
    print(
        f"{'layer':<8}{'units':>6}{'pairs':>8}{'site MB':>9}{'B/unit':>9}"
        f"{'recon s':>9}{'limit s':>9}{'wall x':>8}{'cpu x':>8}{'ms/pair':>9}{'fwd s':>8}{'+fwd x':>8}"
    )
    for layer, n in res["shown_units"].items():
        lb = s["layer_bytes"].get(layer, 0)
        r = (lim or {}).get("reconstructions", {}).get(layer, {})
        t = timers.get(layer)
        print(
            f"{layer:<8}{n:>6}{r.get('pairs', 0):>8}{_mb(lb):>9}{lb / max(n, 1):>9.0f}"
            f"{(f'{t:.1f}' if t is not None else 'n/a'):>9}{r.get('limit_s', float('nan')):>9.2f}"
            f"{ratio(t, r.get('limit_s')):>8}{ratio(timers_cpu.get(layer), r.get('limit_cpu_s')):>8}"
            f"{r.get('ms_per_pair', float('nan')):>9.3f}{r.get('forwards_s', float('nan')):>8.2f}"
            f"{ratio(t, r['limit_s'] + r['forwards_s'] if 'forwards_s' in r else None):>8}"
        )
    if not lim:
        return
    f = lim["forward"]
    recon = st.get("reconstructions")
    print(
        f"limit ({lim['device']}, {lim['threads']} threads): forward {f['images']} images "
        f"{f['seconds']:.1f} s ({f['images_per_s']:.1f} images/s, decode included) "
        f"+ reconstructions {lim['reconstruction_limit_s']:.1f} s "
        f"= {lim['limit_s']:.1f} s"
    )
    if "mine" in st:
        print(
            f"mine / forward limit: {st['mine']:.1f} / {f['seconds']:.1f} s = {st['mine'] / f['seconds']:.2f}"
        )
    if recon is not None and lim["reconstruction_limit_s"]:
        print(
            f"reconstructions / limit: {recon:.1f} / {lim['reconstruction_limit_s']:.1f} s = "
            f"{recon / lim['reconstruction_limit_s']:.2f}"
        )
    extra = {
        k: v for k, v in st.items() if k not in ("mine", "reconstructions") and isinstance(v, (int, float))
    }
    print(
        "not in the limit: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in extra.items())
        + f", render {res['render']['wall_s']:.1f} s"
    )
    if timers_cpu and lim.get("reconstruction_limit_cpu_s"):
        print(
            f"reconstructions / limit in CPU time: {sum(timers_cpu.values()):.1f} / "
            f"{lim['reconstruction_limit_cpu_s']:.1f} s = "
            f"{sum(timers_cpu.values()) / lim['reconstruction_limit_cpu_s']:.2f}"
        )
    res["headline_ratio"] = whole / lim["limit_s"]
    whole_cpu = res["build"]["cpu_s"] + res["render"]["cpu_s"]
    res["headline_ratio_cpu"] = whole_cpu / lim["limit_cpu_s"]
    print(
        f"HEADLINE build time / limit = {whole:.1f} / {lim['limit_s']:.1f} s = {res['headline_ratio']:.2f}  "
        f"(build without render {res['build']['wall_s'] / lim['limit_s']:.2f}; in CPU time "
        f"{whole_cpu:.1f} / {lim['limit_cpu_s']:.1f} s = {res['headline_ratio_cpu']:.2f})"
    )


# --- main ------------------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child_main(sys.argv[2], sys.argv[3], sys.argv[4])
        return
    import yaml

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--quick", action="store_true", help="40 classes x 10 probe images, alexnet, fc6/fc7 128 units"
    )
    ap.add_argument(
        "--nets", default=None, help="comma list of alexnet,vgg19 (default: both; --quick: alexnet)"
    )
    ap.add_argument(
        "--data", type=Path, default=Path("/tmp/sitegen-seed-scale"), help="dataset and runs folder"
    )
    ap.add_argument("--classes", type=int, help="override the class count (quick 40, full 160)")
    ap.add_argument("--probe-per-class", type=int, help="override probe images per class (quick 10, full 19)")
    ap.add_argument("--units", help="override units: (YAML), e.g. all, 8 or '{fc6: 256, fc7: 256}'")
    ap.add_argument("--analyses", help="merge into analyses: (YAML), e.g. '{occlusion: {enabled: false}}'")
    ap.add_argument("--device", default="cpu", help="spec device and limit device: cpu (default), cuda, auto")
    ap.add_argument(
        "--rss-sweep", action="store_true", help="only the 1,000 vs 10,000 probe images RSS sweep"
    )
    ap.add_argument(
        "--sweep-sizes", default="10,100", help="probe images per class of the sweep (100 classes)"
    )
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="processes drawing the data")
    ap.add_argument("--seed", type=int, default=0, help="dataset seed")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()

    t0 = time.perf_counter()
    results: dict[str, Any] = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "started": time.strftime("%F %T"),
        "cpus": os.cpu_count(),
        "load": os.getloadavg(),
    }
    if args.rss_sweep:
        sizes = [int(s) for s in args.sweep_sizes.split(",")]
        sweep: list[dict] = []
        for per in sizes:
            data = make_dataset(args.data, 100, per + 1, args.seed, args.workers)
            run = Run(f"sweep-{per * 100}", "alexnet", "torchvision:alexnet", 100, per, 4, ANALYSES_SWEEP)
            res = build_one(run, data, args.data, args.device, measure=False)
            sweep.append(
                {
                    "probe": res.get("n_probe"),
                    "peak_rss": res["build"]["peak_rss"],
                    "wall_s": res["build"]["wall_s"],
                    "rc": res["build"]["rc"],
                }
            )
        print(
            "\n== peak RSS against the probe set "
            "(alexnet, 4 units a layer, no gradcam/occlusion/invariance/embedding) =="
        )
        for s in sweep:
            print(
                f"{s['probe']!s:>7} probe images: peak RSS {s['peak_rss'] / 1e9:.2f} GB, "
                f"build {s['wall_s']:.0f} s" + ("" if s["rc"] == 0 else f" (FAILED, exit {s['rc']})")
            )
        ratio = sweep[-1]["peak_rss"] / sweep[0]["peak_rss"]
        print(f"ratio {ratio:.3f} ({'within' if abs(ratio - 1) <= 0.10 else 'NOT within'} 10 %)")
        results["rss_sweep"] = {"runs": sweep, "ratio": ratio}
    else:
        classes = args.classes or (40 if args.quick else 160)
        probe = args.probe_per_class or (10 if args.quick else 19)
        nets = (args.nets or ("alexnet" if args.quick else "alexnet,vgg19")).split(",")
        units = (
            yaml.safe_load(args.units) if args.units else ({"fc6": 128, "fc7": 128} if args.quick else "all")
        )
        mode = "quick" if args.quick else "full"
        analyses = dict(ANALYSES_DEFAULT)
        for k, v in (yaml.safe_load(args.analyses) if args.analyses else {}).items():
            analyses[k] = {**analyses.get(k, {}), **v} if isinstance(v, dict) else v
        data = make_dataset(args.data, classes, probe + 1, args.seed, args.workers)
        results["networks"] = []
        for net in nets:
            run = Run(f"{mode}-{net}", net, f"torchvision:{net}", classes, probe, units, analyses)
            res = build_one(run, data, args.data, args.device)
            print_network(res)
            sys.stdout.flush()
            results["networks"].append(res)
    results["seconds"] = time.perf_counter() - t0
    results["load_end"] = os.getloadavg()
    print(
        f"\nload average at start {results['load'][0]:.1f}, at end {results['load_end'][0]:.1f} "
        f"on {os.cpu_count()} CPUs (the machine is shared: 10-30 % noise, more when busy)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
        say(f"results -> {args.json}")
    say(f"done in {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
