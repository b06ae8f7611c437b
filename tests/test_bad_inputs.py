"""Every input a lab can get wrong, run as `sitegen build` (issue 11): one case per kind.

Each error case starts from a copy of one tiny finished atlas (built once for the module), breaks its
spec, data, checkpoints or disk, runs `sitegen build` through typer's CliRunner and asserts: exit code
2, one line per problem, the culprit (file, key or path) named, no traceback, and the previous build's
store and site byte for byte intact. The should-work cases (mixed image sizes, non-ASCII and long
class names, symlink loops, lazy modules in a module beside the spec) build and exit 0.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import shutil
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from sitegen.cli import app
from sitegen.store import codecs

runner = CliRunner()

SPEC = """\
title: bad inputs
datasets:
  d:
    builtin: doodles
    classes: [circle, square, star]
    images_per_class: 4
    image_size: 32
networks:
  net:
    arch: zoo:alexnet_small
    dataset: d
    units: 2
analyses:
  top_k: 2
  activation_maps: {images: 0}
  gradcam: {enabled: false}
  occlusion: {enabled: false}
  embedding: {enabled: false}
  invariance: {enabled: false}
  stroke: {enabled: false}
"""

NET = """\
  net:
    arch: zoo:alexnet_small
    dataset: d
    units: 2
"""
TV_ALEXNET = NET.replace("zoo:alexnet_small", "alexnet")
DOODLES = """\
    builtin: doodles
    classes: [circle, square, star]
    images_per_class: 4
"""


@pytest.fixture(scope="module")
def atlas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny finished atlas (random weights, few analyses): the "previous build" every case keeps."""
    root = tmp_path_factory.mktemp("atlas")
    (root / "experiments.yaml").write_text(SPEC)
    result = runner.invoke(app, ["build", str(root / "experiments.yaml"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert (root / "output" / "site" / "index.html").is_file()
    return root


@pytest.fixture
def lab(atlas: Path, tmp_path: Path) -> Path:
    """A private copy of the atlas folder (spec + output), to break."""
    dest = tmp_path / "lab"
    shutil.copytree(atlas, dest, symlinks=True)
    return dest


def snapshot(root: Path) -> dict[str, str]:
    """Content hash of every file under output/store and output/site."""
    out = {}
    for sub in ("store", "site"):
        for p in sorted((root / "output" / sub).rglob("*")):
            if p.is_file():
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# --- breaking things ------------------------------------------------------------------------------


def spec(lab: Path, old: str | None = None, new: str = "", *, extra: str = "") -> Path:
    """Rewrite the lab's spec: ``old`` replaced by ``new`` (must occur), ``extra`` appended."""
    path = lab / "experiments.yaml"
    text = path.read_text()
    if old is not None:
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text + extra)
    return path


def folder_data(lab: Path, classes: dict[str, int], *, size: tuple[int, int] = (40, 40)) -> Path:
    """An ImageFolder under lab/data with ``n`` small PNGs per class, and the spec pointed at it."""
    for cls, n in classes.items():
        (lab / "data" / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shade = (37 * i + 11 * len(cls)) % 200
            colour = (shade, 255 - shade, 3 * shade % 256)
            Image.new("RGB", size, colour).save(lab / "data" / cls / f"{i}.png")
    return spec(lab, DOODLES, "    path: data\n")


def write_checkpoint(lab: Path, obj: object, name: str = "ckpt.pt") -> Path:
    path = lab / name
    torch.save(obj, path)
    return spec(lab, NET, NET + f"    weights: {name}\n")


class RunsCode:
    """A pickled object whose unpickling would call os.system: what weights_only=True refuses."""

    def __reduce__(self) -> tuple:
        return (os.system, ("echo pwned",))


def user_module(lab: Path, name: str, code: str) -> Path:
    (lab / f"{name}.py").write_text(textwrap.dedent(code))
    return spec(lab, "arch: zoo:alexnet_small", f"arch: {name}:net")


def fail_writes(mp: pytest.MonkeyPatch, err: int, *, probe_too: bool = True) -> None:
    """The store's atomic write raises OSError(err): a full disk or a read-only folder, simulated
    (CI runs as root, and root writes into a read-only folder)."""
    real = codecs.write_bytes

    def write_bytes(path: Path, data: bytes, *, durable: bool = False) -> None:
        if probe_too or ".sitegen-write-test" not in path.name:
            raise OSError(err, os.strerror(err), str(path))
        real(path, data, durable=durable)

    mp.setattr(codecs, "write_bytes", write_bytes)


def unreadable_folder(lab: Path, mp: pytest.MonkeyPatch) -> Path:
    path = folder_data(lab, {"cats": 3, "dogs": 3})
    real = os.scandir
    target = str(lab / "data")

    def scandir(p: str | os.PathLike = ".") -> object:
        if os.fspath(p) == target:
            raise PermissionError(errno.EACCES, "Permission denied", target)
        return real(p)

    mp.setattr(os, "scandir", scandir)
    return path


@dataclass(frozen=True)
class Case:
    kind: str
    breaks: Callable[[Path, pytest.MonkeyPatch], Path]  # -> the spec to build
    culprit: tuple[str, ...]  # substrings every one of which the output must contain
    lines: int = 1


CASES = [
    # --- the spec file itself
    Case("spec missing", lambda lab, mp: lab / "nope.yaml", ("nope.yaml", "spec file not found")),
    Case(
        "spec not UTF-8",
        lambda lab, mp: (
            (lab / "latin1.yaml").write_bytes("title: caf\xe9\n".encode("latin-1")) and lab / "latin1.yaml"
        ),
        ("latin1.yaml", "not UTF-8"),
    ),
    Case("empty spec", lambda lab, mp: spec(lab, SPEC, ""), ("experiments.yaml:1", "expected a mapping")),
    Case("spec is a list", lambda lab, mp: spec(lab, SPEC, "- a\n- b\n"), ("(top level)",)),
    Case(
        "YAML syntax error",
        lambda lab, mp: spec(lab, "classes: [circle, square, star]", "classes: [circle, square"),
        ("experiments.yaml:", "YAML syntax error"),
    ),
    Case(
        "duplicate key",
        lambda lab, mp: spec(lab, "title: bad inputs\n", "title: bad inputs\ntitle: twice\n"),
        ("experiments.yaml:2", "duplicate key 'title'"),
    ),
    Case(
        "typo in a key",
        lambda lab, mp: spec(lab, "image_size: 32", "image_sise: 32"),
        ("experiments.yaml:7", "datasets.d.image_sise", "did you mean 'image_size'"),
    ),
    Case(
        "typo in a section name",
        lambda lab, mp: spec(lab, "activation_maps:", "activation_map:"),
        ("analyses.activation_map", "did you mean 'activation_maps'"),
    ),
    Case(
        "wrong type: text for a number",
        lambda lab, mp: spec(lab, "image_size: 32", "image_size: big"),
        ("experiments.yaml:7", "datasets.d.image_size"),
    ),
    Case(
        "wrong type: a name for a list",
        lambda lab, mp: spec(lab, "classes: [circle, square, star]", "classes: circle"),
        ("datasets.d.classes", "expected 'all', a list of class names"),
    ),
    Case(
        "value out of range",
        lambda lab, mp: spec(lab, "top_k: 2", "top_k: 0"),
        ("analyses.top_k", "got 0"),
    ),
    Case(
        "bad network name",
        lambda lab, mp: spec(lab, "  net:\n", "  my net:\n"),
        ("networks.my net", "must use letters"),
    ),
    # --- references between sections
    Case(
        "unknown architecture",
        lambda lab, mp: spec(lab, "zoo:alexnet_small", "zoo:alexnet_smal"),
        ("experiments.yaml:10", "networks.net.arch", "did you mean 'zoo:alexnet_small'"),
    ),
    Case(
        "unknown dataset reference",
        lambda lab, mp: spec(lab, "dataset: d\n", "dataset: dd\n"),
        ("networks.net.dataset", "unknown dataset 'dd'"),
    ),
    Case(
        "unknown doodles class",
        lambda lab, mp: spec(lab, "[circle, square, star]", "[circle, sqare]"),
        ("datasets.d", "unknown doodles classes ['sqare']"),
    ),
    Case(
        "bad diff reference",
        lambda lab, mp: spec(lab, extra="diffs:\n  - {a: net, b: net@init}\n"),
        ("diffs.0.a", "expected 'NETWORK@CHECKPOINT'"),
    ),
    Case(
        "diff of an unknown checkpoint",
        lambda lab, mp: spec(lab, extra="diffs:\n  - {a: net@init, b: net@epoch-2}\n"),
        ("diffs.0.b", "no checkpoint 'epoch-2'"),
    ),
    Case(
        "atlas of an unknown checkpoint",
        lambda lab, mp: spec(lab, NET, NET + "    atlas: [best]\n"),
        ("networks.net.atlas", "unknown checkpoints ['best']"),
    ),
    Case(
        "train and weights together",
        lambda lab, mp: (
            spec(lab, NET, NET + "    weights: w.pt\n    train: {epochs: 1}\n")
            and (lab / "w.pt").write_bytes(b"x")
            and lab / "experiments.yaml"
        ),
        ("networks.net.train", "drop weights/checkpoints"),
    ),
    Case(
        "device cuda without CUDA",
        lambda lab, mp: spec(lab, extra="device: cuda\n"),
        ("device", "'cuda' requested but this machine has no CUDA device"),
    ),
    Case("device misspelled", lambda lab, mp: spec(lab, extra="device: gpu\n"), ("device", "got 'gpu'")),
    # --- data
    Case(
        "data folder missing",
        lambda lab, mp: spec(lab, DOODLES, "    path: nowhere\n"),
        ("datasets.d.path", "folder not found", "nowhere"),
    ),
    Case(
        "data folder unreadable",
        unreadable_folder,
        ("datasets.d", "cannot list", "data", "Permission denied"),
    ),
    Case(
        "data folder without class folders",
        lambda lab, mp: (lab / "data").mkdir() or spec(lab, DOODLES, "    path: data\n"),
        ("datasets.d", "no class sub-folders"),
    ),
    Case(
        "a single class",
        lambda lab, mp: folder_data(lab, {"cats": 6}),
        ("datasets.d", "needs at least 2 classes", "'cats'"),
    ),
    Case(
        "a single doodles class",
        lambda lab, mp: spec(lab, "[circle, square, star]", "[circle]"),
        ("datasets.d", "needs at least 2 classes"),
    ),
    Case(
        "unknown folder class",
        lambda lab, mp: (
            folder_data(lab, {"cats": 3, "dogs": 3})
            and spec(lab, "    path: data\n", "    path: data\n    classes: [cats, dgos]\n")
        ),
        ("datasets.d", "'dgos' (did you mean 'dogs'?)"),
    ),
    Case(
        "a class folder of only corrupt files",
        lambda lab, mp: (
            folder_data(lab, {"cats": 3, "dogs": 0})
            and [(lab / "data" / "dogs" / f"{i}.png").write_bytes(b"\x89PNG broken") for i in range(3)]
            and lab / "experiments.yaml"
        ),
        ("dataset 'd'", "dogs", "has no readable image"),
    ),
    Case(
        "a class folder without images",
        lambda lab, mp: (
            folder_data(lab, {"cats": 3, "dogs": 0})
            and (lab / "data" / "dogs" / "notes.txt").write_text("no images")
            and lab / "experiments.yaml"
        ),
        ("dogs", "has no readable image"),
    ),
    Case(
        "a probe split that ends up empty",
        lambda lab, mp: folder_data(lab, {"cats": 1, "dogs": 1}),
        ("dataset 'd'", "probe split is empty"),
    ),
    # --- networks, layers, units, checkpoints
    Case(
        "unknown layer",
        lambda lab, mp: spec(lab, NET, NET + "    layers: [conv1, conv9]\n"),
        ("networks.net.layers", "unknown layer 'conv9'"),
    ),
    Case(
        "unit index past the layer",
        lambda lab, mp: spec(lab, "    units: 2\n", "    units: {conv1: [0, 5000]}\n"),
        ("networks.net.units.conv1", "unit 5000 out of range", "'conv1' has 32 units"),
    ),
    Case(
        "units of an unknown layer",
        lambda lab, mp: spec(lab, "    units: 2\n", "    units: {conv9: 2}\n"),
        ("networks.net.units.conv9", "no layer 'conv9'"),
    ),
    Case(
        "unknown technique layer",
        lambda lab, mp: spec(lab, "gradcam: {enabled: false}", "gradcam: {layer: conv_5}"),
        ("analyses.gradcam.layer", "no layer 'conv_5'"),
    ),
    Case(
        "every spec problem at once",
        lambda lab, mp: (
            spec(lab, "    units: 2\n", "    units: {conv1: [40], fc9: 1}\n" + "    layers: [conv1, c3]\n")
            and spec(lab, "gradcam: {enabled: false}", "gradcam: {layer: conv_5}")
        ),
        ("units.conv1", "units.fc9", "networks.net.layers", "analyses.gradcam.layer"),
        lines=4,
    ),
    Case(
        "input smaller than the network takes",
        lambda lab, mp: spec(lab, "image_size: 32", "image_size: 8"),
        ("networks.net.arch", "8x8 px input does not fit", "use a larger image_size"),
    ),
    Case(
        "unknown torchvision weights name",
        lambda lab, mp: (
            spec(lab, NET, TV_ALEXNET + "    weights: IMAGENET1K_V9\n")
            and spec(lab, "image_size: 32", "image_size: 64")
        ),  # AlexNet takes 63 px and up
        ("networks.net.weights", "unknown weights 'IMAGENET1K_V9' for alexnet"),
    ),
    Case(
        "checkpoint missing",
        lambda lab, mp: spec(lab, NET, NET + "    weights: ckpt/best.pt\n"),
        ("networks.net.weights", "checkpoint file not found", "ckpt/best.pt"),
    ),
    Case(
        "checkpoint damaged",
        lambda lab, mp: (
            (lab / "junk.pt").write_bytes(b"not a checkpoint at all")
            and spec(lab, NET, NET + "    weights: junk.pt\n")
        ),
        ("junk.pt", "cannot read checkpoint"),
    ),
    Case(
        "a pickle carrying code",
        lambda lab, mp: write_checkpoint(lab, {"model": RunsCode()}),
        ("ckpt.pt", "was refused", "Python objects", "state_dict"),
    ),
    Case(
        "a plain pickle, not torch.save",
        lambda lab, mp: (
            (lab / "plain.pkl").write_bytes(pickle.dumps({"w": RunsCode()}, protocol=4))
            and spec(lab, NET, NET + "    checkpoints: {plain: plain.pkl}\n")
        ),
        ("plain.pkl",),
    ),
    Case(
        "a whole pickled model",
        lambda lab, mp: write_checkpoint(lab, nn.Linear(2, 2)),
        ("ckpt.pt", "was refused", "torch.nn.modules.linear.Linear", "state_dict()"),
    ),
    Case(
        "checkpoint of another architecture",
        lambda lab, mp: write_checkpoint(lab, {"fc.weight": torch.zeros(3, 4)}),
        ("ckpt.pt", "does not fit"),
    ),
    Case(
        "damaged checkpoint of a second network, before the first trains",
        lambda lab, mp: (
            (lab / "junk.pt").write_bytes(b"PK\x03\x04 truncated zip")
            and spec(
                lab,
                NET,
                NET + TRAIN + "  net2:\n    arch: zoo:alexnet_small\n    dataset: d\n    weights: junk.pt\n",
            )
        ),
        ("networks.net2.weights", "junk.pt"),
    ),
    Case(
        "checkpoint without a state_dict",
        lambda lab, mp: write_checkpoint(lab, {"epoch": 3}),
        ("ckpt.pt", "not a state_dict"),
    ),
    Case(
        "user module that does not import",
        lambda lab, mp: user_module(lab, "broken_nets", "import does_not_exist\n"),
        ("networks.net.arch", "cannot import module 'broken_nets'", "does_not_exist"),
    ),
    Case(
        "user builder that fails",
        lambda lab, mp: user_module(lab, "failing_nets", "def net(num_classes):\n    raise ValueError('no')"),
        ("networks.net.arch", "the builder failed: ValueError: no"),
    ),
    # --- the output folder and the disk
    Case(
        "output is a file",
        lambda lab, mp: (lab / "out.txt").write_text("x") and spec(lab, extra="output: out.txt\n"),
        ("experiments.yaml:", "output:", "out.txt is a file, not a folder"),
    ),
    Case(
        "read-only output folder",
        lambda lab, mp: fail_writes(mp, errno.EACCES) or lab / "experiments.yaml",
        ("output:", "output", "permission denied"),
    ),
    Case(
        "full disk at the first write",
        lambda lab, mp: fail_writes(mp, errno.ENOSPC) or lab / "experiments.yaml",
        ("output:", "no space left"),
    ),
    Case(
        "disk fills up during the build",
        lambda lab, mp: fail_writes(mp, errno.ENOSPC, probe_too=False) or lab / "experiments.yaml",
        ("dataset.json", "cannot write: no space left"),
    ),
]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch, on the plain pickle
@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_bad_input_is_one_line_and_keeps_the_atlas(
    case: Case, lab: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if case.kind == "device cuda without CUDA" and torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    before = snapshot(lab)
    path = case.breaks(lab, monkeypatch)
    result = runner.invoke(app, ["build", str(path), "--quiet"])
    out = result.output
    assert result.exit_code == 2, out
    assert "Traceback" not in out and result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == case.lines, out
    assert len(out.strip().splitlines()) == case.lines, out  # nothing else (--quiet: no warnings either)
    for part in case.culprit:
        assert part in out, f"{part!r} not in {out!r}"
    monkeypatch.undo()
    assert snapshot(lab) == before, "a failed build must leave the previous store and site intact"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders (simulated above)")
def test_a_really_read_only_output_folder(lab: Path) -> None:
    before = snapshot(lab)
    store = lab / "output" / "store"
    store.chmod(0o555)
    try:
        result = runner.invoke(app, ["build", str(lab / "experiments.yaml"), "--quiet"])
    finally:
        store.chmod(0o755)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0 and "permission denied" in result.output
    assert snapshot(lab) == before


def test_the_kinds_are_many_and_distinct() -> None:
    assert len(CASES) >= 27 and len({c.kind for c in CASES}) == len(CASES)


# --- inputs that must work ------------------------------------------------------------------------


def small_build(lab: Path, path: Path) -> str:
    spec(lab, extra="output: out2\n")
    result = runner.invoke(app, ["build", str(path)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result.output


def test_images_of_mixed_sizes_and_modes(lab: Path) -> None:
    path = folder_data(lab, {"cats": 2, "dogs": 2}, size=(100, 30))
    Image.new("L", (17, 61), 128).save(lab / "data" / "cats" / "tall-grey.png")
    Image.new("RGBA", (300, 200), (10, 200, 30, 100)).save(lab / "data" / "dogs" / "wide-alpha.png")
    Image.new("RGB", (32, 32), (1, 2, 3)).save(lab / "data" / "dogs" / "exact.jpg")
    small_build(lab, path)
    assert (lab / "out2" / "site" / "index.html").is_file()


def test_non_ascii_and_very_long_class_names(lab: Path) -> None:
    long_name = "a-very-long-class-name-" * 8  # 184 characters, near the file-name limit
    names = {"café au lait": 3, "猫 ねこ": 3, long_name: 3, "<b>&amp;": 3}
    path = folder_data(lab, names)
    small_build(lab, path)
    index = (lab / "out2" / "site" / "index.html").read_text(encoding="utf-8")
    assert "猫 ねこ" in index and "café au lait" in index and long_name in index
    assert "<b>&amp;" not in index  # escaped


def test_symlink_loops_are_walked_once(lab: Path) -> None:
    path = folder_data(lab, {"cats": 3, "dogs": 3})
    os.symlink("..", lab / "data" / "cats" / "up")  # cats/up/cats/up/... and cats/up/dogs
    os.symlink(".", lab / "data" / "dogs" / "self")
    os.symlink(".", lab / "data" / "root")  # a link to the root is no class
    out = small_build(lab, path)
    assert "symlink" in out
    record = (lab / "out2" / "store" / "datasets" / "d" / "dataset.json").read_text()
    assert '"class_names": [\n  "cats",\n  "dogs"\n ]' in record
    import json

    ds = json.loads(record)
    assert ds["n_train"] + ds["n_probe"] == 6  # each image once: the loops are not followed


TRAIN = "    train: {epochs: 1, batch_size: 8}\n"
LAZY = """\
from torch import nn


class LeNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.LazyLinear(32), nn.ReLU(), nn.LazyLinear(num_classes)
        )

    def forward(self, x):
        return self.classifier(self.features(x))
"""


def test_lazy_modules_in_a_module_beside_the_spec(lab: Path) -> None:
    (lab / "lazynets_bad_inputs.py").write_text(LAZY)
    path = spec(lab, NET, NET.replace("zoo:alexnet_small", "lazynets_bad_inputs:LeNet") + TRAIN)
    small_build(lab, path)
    network = (lab / "out2" / "store" / "networks" / "net" / "network.json").read_text()
    assert '"fc' in network or "classifier" in network
