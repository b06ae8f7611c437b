"""The command line through typer's CliRunner: exit codes, and lines that must / must not appear."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
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
