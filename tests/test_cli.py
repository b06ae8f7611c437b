"""The command line through typer's CliRunner: exit codes, and lines that must / must not appear."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from sitegen.cli import app
from sitegen.errors import SpecError

runner = CliRunner()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "experiments.yaml"
    path.write_text(textwrap.dedent(text))
    return path


TINY = """\
title: tiny
datasets:
  d:
    builtin: doodles
    classes: [circle, square, star]
    images_per_class: 8
    image_size: 32
networks:
  net:
    arch: zoo:alexnet_small
    dataset: d
    train: {epochs: 1, batch_size: 8}
"""


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("sitegen ")


def test_schema_is_json() -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    assert "networks" in json.loads(result.output)["properties"]


def test_missing_spec_is_one_line_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["build", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "spec file not found" in lines[0]
    assert "Traceback" not in result.output


def test_bad_spec_lists_every_problem(tmp_path: Path) -> None:
    path = write(
        tmp_path, TINY.replace("zoo:alexnet_small", "alexnett").replace("image_size: 32", "image_size: 0")
    )
    result = runner.invoke(app, ["build", str(path)])
    assert result.exit_code == 2
    out = result.output
    assert "experiments.yaml:7: datasets.d.image_size: Input should be greater than 0, got 0" in out
    assert (
        "experiments.yaml:10: networks.net.arch: unknown architecture 'alexnett' (did you mean 'alexnet'?)"
        in out
    )
    assert "Traceback" not in out


def test_debug_shows_the_exception(tmp_path: Path) -> None:
    result = runner.invoke(app, ["build", str(tmp_path / "nope.yaml"), "--debug"])
    assert isinstance(result.exception, SpecError)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda(tmp_path: Path) -> None:
    path = write(tmp_path, TINY + "device: cuda\n")
    result = runner.invoke(app, ["build", str(path)])
    assert result.exit_code == 2
    assert (
        "experiments.yaml:13: device: 'cuda' requested but this machine has no CUDA device" in result.output
    )
    assert not (tmp_path / "output").exists()


def test_missing_checkpoint(tmp_path: Path) -> None:
    path = write(
        tmp_path, TINY.replace("    train: {epochs: 1, batch_size: 8}\n", "    weights: ckpt/best.pt\n")
    )
    result = runner.invoke(app, ["build", str(path)])
    assert result.exit_code == 2
    assert "networks.net.weights: checkpoint file not found" in result.output


def test_checkpoint_for_another_architecture(tmp_path: Path) -> None:
    torch.save({"fc.weight": torch.zeros(3, 4)}, tmp_path / "other.pt")
    path = write(tmp_path, TINY.replace("    train: {epochs: 1, batch_size: 8}\n", "    weights: other.pt\n"))
    result = runner.invoke(app, ["build", str(path)])
    assert result.exit_code == 2, result.output
    assert "other.pt" in result.output
    assert "Traceback" not in result.output


def test_dataset_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "data" / "cats").mkdir(parents=True)
    (tmp_path / "data" / "cats" / "notes.txt").write_text("no images here")
    (tmp_path / "data" / "dogs").mkdir()
    path = write(
        tmp_path,
        TINY.replace(
            "    builtin: doodles\n    classes: [circle, square, star]\n    images_per_class: 8\n",
            "    path: data\n",
        ),
    )
    result = runner.invoke(app, ["build", str(path)])
    assert result.exit_code == 2
    assert "data" in result.output
    assert "Traceback" not in result.output


def test_layers_json_for_an_arch() -> None:
    result = runner.invoke(
        app, ["layers", "zoo:alexnet_small", "--input-size", "64", "--json", "--num-classes", "5"]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["name"] for r in rows][:5] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert rows[-1]["name"] == "prob" and rows[-1]["units"] == 5
    assert set(rows[0]) >= {"name", "module", "kind", "shape", "units", "rf_size", "rf_stride"}


def test_layers_of_a_spec_network(tmp_path: Path) -> None:
    path = write(tmp_path, TINY)
    result = runner.invoke(app, ["layers", "net", "--spec", str(path), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert rows[-1]["units"] == 3  # three doodle classes


def test_layers_table_and_typo() -> None:
    result = runner.invoke(app, ["layers", "torchvision:alexnet", "--input-size", "224"])
    assert result.exit_code == 0, result.output
    assert "features.11" in result.output and "conv5" in result.output
    bad = runner.invoke(app, ["layers", "torchvision:alexnett"])
    assert bad.exit_code == 2
    assert "did you mean 'torchvision:alexnet'?" in bad.output


def test_render_without_build_is_a_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path, TINY)
    result = runner.invoke(app, ["render", str(path)])
    assert result.exit_code == 2
    assert "run `sitegen build` first" in result.output


# --- issue 11: each row of the table, as `sitegen build` ---------------------------------------------

QUICK = """\
analyses:
  top_k: 2
  activation_maps: {images: 0}
  gradcam: {enabled: false}
  occlusion: {enabled: false}
  embedding: {enabled: false}
  invariance: {enabled: false}
  stroke: {enabled: false}
"""
DOODLES = "    builtin: doodles\n    classes: [circle, square, star]\n    images_per_class: 8\n"


def one_error(result, *parts: str) -> str:
    """Exit 2, one line, every part in it, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    for part in parts:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"
    return lines[0]


def test_a_single_class_is_refused_before_training(tmp_path: Path) -> None:
    cats = tmp_path / "data" / "cats"
    cats.mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (32, 32), (60 * i, 20, 9 * i)).save(cats / f"{i}.png")
    path = write(tmp_path, TINY.replace(DOODLES, "    path: data\n"))
    one_error(
        runner.invoke(app, ["build", str(path)]),
        "experiments.yaml:3: datasets.d:",
        "a classifier atlas needs at least 2 classes, found only 'cats'",
    )
    assert not (tmp_path / "output").exists()  # no training, nothing written


def test_a_unit_index_past_the_layer_is_an_error_before_any_work(tmp_path: Path) -> None:
    path = write(tmp_path, TINY + "    units: {conv1: [0, 5000]}\n")
    one_error(
        runner.invoke(app, ["build", str(path)]),
        "experiments.yaml:13: networks.net.units.conv1:",
        "unit 5000 out of range: layer 'conv1' has 32 units (0..31)",
    )
    assert not (tmp_path / "output").exists()


def test_output_pointing_at_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file")
    path = write(tmp_path, TINY + "output: taken\n")
    result = runner.invoke(app, ["build", str(path)])
    one_error(result, f"experiments.yaml:13: output: {tmp_path / 'taken'} is a file, not a folder")


def test_unknown_layers_are_reported_with_every_other_problem_before_training(tmp_path: Path) -> None:
    extra = "    layers: [conv1, conv9]\n    units: {fc6: [999]}\n"
    extra += "diffs:\n  - {a: net@epoch-1, b: net@epoch-5}\n"
    path = write(tmp_path, TINY + extra)
    result = runner.invoke(app, ["build", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert lines == [
        "error: experiments.yaml:13: networks.net.layers: unknown layer 'conv9' (did you mean 'conv5'?); "
        "layers: conv1, conv2, conv3, conv4, conv5, fc6, fc7, fc8, prob, or a module path such as "
        "features.0 (`sitegen layers` lists them)",
        "error: experiments.yaml:14: networks.net.units.fc6: unit 999 out of range: layer 'fc6' has 256 "
        "units (0..255)",
        "error: experiments.yaml:16: diffs.0.b: net has no checkpoint 'epoch-5'; it has ['epoch-1']",
    ]
    assert not (tmp_path / "output" / "checkpoints").exists()  # training never started


LENET = """\
from torch import nn


class LeNet(nn.Module):
    \"\"\"LeNet-style, with lazy linears as in much lab code.\"\"\"

    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.LazyLinear(24), nn.ReLU(), nn.LazyLinear(num_classes))

    def forward(self, x):
        return self.head(self.features(x))
"""


def test_lazy_modules_train_and_build(tmp_path: Path) -> None:
    (tmp_path / "lazy_lenet_cli.py").write_text(LENET)
    path = write(tmp_path, TINY.replace("zoo:alexnet_small", "lazy_lenet_cli:LeNet") + QUICK)
    result = runner.invoke(app, ["build", str(path)])
    assert result.exit_code == 0, result.output
    network = json.loads((tmp_path / "output" / "store" / "networks" / "net" / "network.json").read_text())
    assert [layer["name"] for layer in network["layers"]][-1] == "prob"
    assert (tmp_path / "output" / "site" / "index.html").is_file()


def test_the_spec_folder_is_importable(tmp_path: Path) -> None:
    (tmp_path / "mynets_cli.py").write_text(LENET.replace("LazyLinear(24)", "Linear(6 * 14 * 14, 24)"))
    path = write(
        tmp_path,
        TINY.replace("zoo:alexnet_small", "mynets_cli:LeNet").replace(
            "    train: {epochs: 1, batch_size: 8}\n", ""
        )
        + QUICK,
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = runner.invoke(app, ["build", str(path)], env=env)
    assert result.exit_code == 0, result.output
    assert "No module named" not in result.output


class RunsCode:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo pwned",))


def test_a_checkpoint_carrying_code_says_why_and_how_to_resave(tmp_path: Path) -> None:
    torch.save({"model": RunsCode()}, tmp_path / "code.pt")
    path = write(tmp_path, TINY.replace("    train: {epochs: 1, batch_size: 8}\n", "    weights: code.pt\n"))
    line = one_error(
        runner.invoke(app, ["build", str(path)]),
        "code.pt was refused: it holds Python objects",
        "that safe loading (torch.load weights_only=True) does not run",
        "re-save its weights as a state_dict",
    )
    assert "damaged" not in line
