"""The spec: good specs load, every bad case reports file:line key: message, all at once."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from sitegen.errors import SpecError
from sitegen.spec import Spec, TopClasses, json_schema, load_spec, parse_spec

GOOD = """\
title: t
datasets:
  doodles:
    builtin: doodles
    images_per_class: 8
    image_size: 32
networks:
  alexnet:
    arch: zoo:alexnet_small
    dataset: doodles
    train: {epochs: 2}
"""


def problems(text: str, tmp_path: Path, **kw) -> list[str]:
    path = tmp_path / "experiments.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(SpecError) as info:
        load_spec(path, **kw)
    return info.value.problems


def test_good_spec_defaults(tmp_path: Path) -> None:
    path = tmp_path / "experiments.yaml"
    path.write_text(GOOD)
    spec = load_spec(path)
    assert isinstance(spec, Spec)
    assert spec.output == (tmp_path / "output").resolve()
    assert spec.analyses.top_k == 9
    assert spec.networks["alexnet"].layers == "auto"
    assert spec.networks["alexnet"].train.epochs == 2
    assert spec.where(("networks", "alexnet", "arch")) == "experiments.yaml:9"
    assert spec.section_hash("networks", "alexnet") == load_spec(path).section_hash("networks", "alexnet")


def test_embedded_default_spec_is_valid() -> None:
    spec = load_spec(Path(__file__).parent.parent / "experiments.yaml")
    assert set(spec.networks) == {"alexnet", "vgg"}
    assert all(net.train for net in spec.networks.values())


def test_spec_is_frozen(tmp_path: Path) -> None:
    spec = parse_spec(GOOD, tmp_path / "x.yaml")
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error type is an implementation detail
        spec.title = "other"  # type: ignore[misc]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    (p,) = problems("a: [1, 2\nb: 3\n", tmp_path)
    assert p.startswith("experiments.yaml:2:2: YAML syntax error")


def test_unknown_key_with_suggestion(tmp_path: Path) -> None:
    (p,) = problems(GOOD + "devise: cpu\n", tmp_path)
    assert p == "experiments.yaml:12: devise: unknown key (did you mean 'device'?)"


def test_nested_unknown_key(tmp_path: Path) -> None:
    (p,) = problems(GOOD.replace("    train: {epochs: 2}", "    train: {epochs: 2, epoch: 3}"), tmp_path)
    assert p == "experiments.yaml:11: networks.alexnet.train.epoch: unknown key (did you mean 'epochs'?)"


def test_wrong_type(tmp_path: Path) -> None:
    (p,) = problems(GOOD.replace("{epochs: 2}", "{epochs: two}"), tmp_path)
    assert p.startswith("experiments.yaml:11: networks.alexnet.train.epochs: Input should be a valid integer")


def test_image_size_must_be_positive(tmp_path: Path) -> None:
    (p,) = problems(GOOD.replace("image_size: 32", "image_size: 0"), tmp_path)
    assert p == "experiments.yaml:6: datasets.doodles.image_size: Input should be greater than 0, got 0"


def test_unknown_arch_uses_injected_checker(tmp_path: Path) -> None:
    def check(arch: str) -> str | None:
        return None if arch == "zoo:alexnet_small" else f"unknown architecture {arch!r}"

    (p,) = problems(GOOD.replace("zoo:alexnet_small", "zoo:alexnett"), tmp_path, arch_check=check)
    assert p == "experiments.yaml:9: networks.alexnet.arch: unknown architecture 'zoo:alexnett'"


def test_missing_checkpoint_and_dataset_path(tmp_path: Path) -> None:
    text = """\
    datasets:
      real:
        path: no/such/folder
    networks:
      net:
        arch: zoo:alexnet_small
        dataset: real
        checkpoints: {best: missing.pt}
    """
    got = problems(text, tmp_path)
    assert got == [
        "experiments.yaml:3: datasets.real.path: folder not found: "
        f"{(tmp_path / 'no/such/folder').resolve()}",
        f"experiments.yaml:8: networks.net.checkpoints.best: checkpoint file not found: "
        f"{(tmp_path / 'missing.pt').resolve()}",
    ]


def test_all_problems_reported_at_once_in_file_order(tmp_path: Path) -> None:
    text = """\
    devise: cpu
    datasets:
      d:
        builtin: doodles
        image_size: -3
        classes: 5
    networks:
      alexnet:
        arch: zoo:alexnet_small
        dataset: dd
        normalization: imagnet
    analyses:
      reconstructions: {methods: [deconv]}
    diffs:
      - {a: alexnet, b: nope@epoch-1}
    """
    got = problems(text, tmp_path)
    keys = [p.split(": ")[1] for p in got]
    assert keys == [
        "devise",
        "datasets.d.image_size",
        "datasets.d.classes",
        "networks.alexnet.dataset",
        "networks.alexnet.normalization",
        "analyses.reconstructions.methods.0",
        "diffs.0.a",
        "diffs.0.b",
    ]
    lines = [int(p.split(":")[1]) for p in got]
    assert lines == sorted(lines)
    assert "did you mean 'd'?" in got[3]
    assert "got 'imagnet'" in got[4]


def test_duplicate_key(tmp_path: Path) -> None:
    got = problems(GOOD + "title: again\n", tmp_path)
    assert got == ["experiments.yaml:12: title: duplicate key 'title'"]


def test_dataset_needs_exactly_one_source(tmp_path: Path) -> None:
    (p,) = problems(GOOD.replace("    builtin: doodles\n", ""), tmp_path)
    assert p.startswith("experiments.yaml:3: datasets.doodles: give exactly one of")


def test_unknown_doodle_class(tmp_path: Path) -> None:
    (p,) = problems(
        GOOD.replace("image_size: 32", "image_size: 32\n    classes: [circle, squiggle]"), tmp_path
    )
    assert "unknown doodles classes ['squiggle']" in p


def test_union_values(tmp_path: Path) -> None:
    text = GOOD.replace("image_size: 32", "image_size: 32\n    classes: {top: 3}").replace(
        "    train: {epochs: 2}",
        "    train: {epochs: 2}\n    units: 4\n"
        "    normalization: {mean: [0.5, 0.5, 0.5], std: [0.2, 0.2, 0.2]}",
    )
    spec = parse_spec(text, tmp_path / "x.yaml")
    assert spec.datasets["doodles"].classes == TopClasses(top=3)
    assert spec.networks["alexnet"].units == 4
    assert spec.networks["alexnet"].normalization.std == (0.2, 0.2, 0.2)


def test_top_zero_points_inside_the_mapping(tmp_path: Path) -> None:
    (p,) = problems(GOOD.replace("image_size: 32", "image_size: 32\n    classes: {top: 0}"), tmp_path)
    assert p == "experiments.yaml:7: datasets.doodles.classes.top: Input should be greater than 0, got 0"


def test_bad_names_and_diff_refs(tmp_path: Path) -> None:
    text = (
        GOOD.replace("  alexnet:\n", "  'alex net':\n")
        + "diffs:\n  - {a: 'alex net@epoch-1', b: vgg@epoch-2}\n"
    )
    got = problems(text, tmp_path)
    assert any("networks.alex net: name 'alex net' must use letters" in p for p in got)
    assert any(p.endswith("diffs.0.b: unknown network 'vgg'; known: alex net") for p in got)


def test_device_pattern(tmp_path: Path) -> None:
    (p,) = problems(GOOD + "device: gpu\n", tmp_path)
    assert p.startswith("experiments.yaml:12: device: String should match pattern")
    assert parse_spec(GOOD + "device: cuda:1\n", tmp_path / "x.yaml").device == "cuda:1"


def test_not_a_mapping(tmp_path: Path) -> None:
    assert problems("- a\n- b\n", tmp_path) == [
        "experiments.yaml:1: (top level): expected a mapping with datasets: and networks:"
    ]


def test_sections_not_mappings(tmp_path: Path) -> None:
    """``datasets: 3`` or a list of networks is a spec problem with its line, not a crash."""
    assert problems("datasets: [1]\nnetworks: 3\n", tmp_path) == [
        "experiments.yaml:1: datasets: Input should be a valid dictionary",
        "experiments.yaml:2: networks: Input should be a valid dictionary",
    ]


def test_json_schema_documents_every_field() -> None:
    schema = json_schema()
    json.dumps(schema)
    assert "networks" in schema["properties"]

    def walk(node: dict, where: str) -> None:
        for name, prop in node.get("properties", {}).items():
            assert prop.get("description") or "$ref" in prop, f"{where}.{name} has no description"

    walk(schema, "Spec")
    for name, definition in schema.get("$defs", {}).items():
        walk(definition, name)


def test_the_spec_folder_is_importable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # issue 11: `arch: mynets:LeNet` with mynets.py beside the spec, as pytest / uvicorn do; once per folder
    monkeypatch.setattr(sys, "path", list(sys.path))
    path = tmp_path / "experiments.yaml"
    path.write_text(GOOD)
    seen: list[str] = []

    def check(arch: str) -> None:
        seen.append(arch)
        assert sys.path[0] == str(tmp_path.resolve())  # already importable while archs are checked

    load_spec(path, arch_check=check)
    load_spec(path)
    assert seen == ["zoo:alexnet_small"] and sys.path.count(str(tmp_path.resolve())) == 1


def test_a_spec_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("seed: 1\ntitle: caf\xe9\n".encode("latin-1"))
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert e.value.problems == [f"{path}:2: not UTF-8 text (byte 0xe9): save the spec as UTF-8"]
