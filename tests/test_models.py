"""The models stage: architecture registry, zoo, checkpoints, layer tables and load_model."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import sys
import textwrap
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from sitegen.errors import ModelError
from sitegen.models import (
    LoadedModel,
    build_model,
    check_arch,
    check_weights,
    file_hash,
    layer_table,
    list_archs,
    load_model,
    load_weights,
    weights_meta,
)
from sitegen.models._registry import register_arch
from sitegen.spec import NetworkSpec


def meta(name: str) -> nn.Module:
    """A torchvision model on the meta device: names and shapes without memory or init cost."""
    with torch.device("meta"):
        return torchvision.models.get_model(name)


def names(table: tuple) -> list[tuple[str, str]]:
    return [(layer.name, layer.module) for layer in table]


def zoo(arch: str, num_classes: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(arch, num_classes)


# --- registry ----------------------------------------------------------------------------------------


def test_list_archs() -> None:
    archs = list_archs()
    assert archs[:3] == ["zoo:alexnet_small", "zoo:resnet_small", "zoo:vgg_small"]
    assert {"torchvision:alexnet", "torchvision:vgg19", "torchvision:resnet18"} <= set(archs)


@pytest.mark.parametrize(
    "arch", ["alexnet", "torchvision:resnet18", "zoo:vgg_small", "torchvision.models:alexnet"]
)
def test_check_arch_accepts(arch: str) -> None:
    assert check_arch(arch) is None


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ("alexnett", "unknown architecture 'alexnett' (did you mean 'alexnet'?)"),
        (
            "torchvision:resnet19",
            "unknown architecture 'torchvision:resnet19' (did you mean 'torchvision:resnet18'?)",
        ),
        (
            "zoo:alexnet",
            "unknown architecture 'zoo:alexnet' (did you mean 'torchvision:alexnet' or 'zoo:alexnet_small'?)",
        ),
        ("zoo:vgg_smal", "unknown architecture 'zoo:vgg_smal' (did you mean 'zoo:vgg_small'?)"),
        ("vgg_small", "unknown architecture 'vgg_small' (did you mean 'zoo:vgg_small'?)"),
        ("zoo:resnet18", "unknown architecture 'zoo:resnet18' (did you mean 'torchvision:resnet18'?)"),
    ],
)
def test_check_arch_suggests(arch: str, message: str) -> None:
    assert check_arch(arch) == message


def test_check_arch_without_a_close_name() -> None:
    message = check_arch("zoo:qqqqqqqq")
    assert message is not None and message.startswith("unknown architecture 'zoo:qqqqqqqq'; use one of zoo:")


def test_check_arch_user_module_import_error() -> None:
    message = check_arch("no_such_pkg_xyz.nets:tiny")
    assert message is not None
    assert "cannot import module 'no_such_pkg_xyz.nets'" in message
    assert "ModuleNotFoundError" in message


def test_register_arch_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="already registered as 'zoo:alexnet_small'"):
        register_arch("alexnet_small")(lambda num_classes=10: nn.Linear(1, 1))


def test_build_unknown_arch() -> None:
    with pytest.raises(ModelError, match="did you mean 'alexnet'"):
        build_model("alexnett", 10)


@pytest.fixture
def user_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A user's own package on sys.path with two builders and an import-time failure."""
    pkg = tmp_path / "labnets"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def tiny(num_classes=1000):
                return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                     nn.Linear(4, num_classes))

            def fixed():  # takes no num_classes: its 7-way head is replaced
                return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                     nn.Linear(4, 7))

            NOT_CALLABLE = 3
            """
        )
    )
    (pkg / "broken.py").write_text("import does_not_exist_either\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "labnets"
    for name in [m for m in sys.modules if m.startswith("labnets")]:
        del sys.modules[name]


def test_user_callable(user_package: str) -> None:
    assert build_model(f"{user_package}.nets:tiny", 5)[-1].out_features == 5
    assert build_model(f"{user_package}.nets:fixed", 5)[-1].out_features == 5


def test_user_callable_errors(user_package: str) -> None:
    assert check_arch(f"{user_package}.nets:tiny") is None
    assert check_arch(f"{user_package}.nets:tinny") == (
        f"architecture '{user_package}.nets:tinny': module '{user_package}.nets' has no attribute 'tinny' "
        f"(did you mean {user_package}.nets:tiny?)"
    )
    assert "is not callable" in str(check_arch(f"{user_package}.nets:NOT_CALLABLE"))
    message = str(check_arch(f"{user_package}.broken:net"))
    assert f"cannot import module '{user_package}.broken'" in message
    assert "No module named 'does_not_exist_either'" in message


# --- zoo -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["zoo:alexnet_small", "zoo:vgg_small", "zoo:resnet_small"])
def test_zoo_is_deterministic_and_takes_64_to_128_px(arch: str) -> None:
    a, b = zoo(arch, seed=3), zoo(arch, seed=3)
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert not any(m.inplace for m in a.modules() if isinstance(m, nn.ReLU))
    a.eval()
    with torch.no_grad():
        assert a(torch.rand(2, 3, 64, 64)).shape == (2, 10)
        assert a(torch.rand(1, 3, 128, 128)).shape == (1, 10)


# --- layer tables --------------------------------------------------------------------------------------


def test_alexnet_layers() -> None:
    table = layer_table(meta("alexnet"), 224)
    assert names(table) == [
        ("conv1", "features.1"),
        ("conv2", "features.4"),
        ("conv3", "features.7"),
        ("conv4", "features.9"),
        ("conv5", "features.11"),
        ("fc6", "classifier.2"),
        ("fc7", "classifier.5"),
        ("fc8", "classifier.6"),
        ("prob", ""),
    ]
    conv1, fc6, prob = table[0], table[5], table[-1]
    assert (conv1.kind, conv1.shape, conv1.units) == ("conv", (64, 55, 55), 64)
    assert (fc6.kind, fc6.shape, fc6.units) == ("linear", (4096,), 4096)
    assert (prob.kind, prob.shape, prob.units) == ("prob", (1000,), 1000)
    assert conv1.to_dict()["shape"] == [64, 55, 55]


def test_vgg19_layers() -> None:
    table = names(layer_table(meta("vgg19"), 64))
    convs = [f"conv{b}_{i}" for b, n in enumerate([2, 2, 4, 4, 4], start=1) for i in range(1, n + 1)]
    assert [n for n, _ in table] == convs + ["fc6", "fc7", "fc8", "prob"]
    assert dict(table)["conv1_1"] == "features.1"
    assert dict(table)["conv5_4"] == "features.35"
    assert (dict(table)["fc6"], dict(table)["fc7"], dict(table)["fc8"]) == (
        "classifier.1",
        "classifier.4",
        "classifier.6",
    )


def test_vgg_bn_skips_batchnorm() -> None:
    table = dict(names(layer_table(meta("vgg11_bn"), 64)))  # VGG-11: two blocks hold one conv each
    assert (table["conv1_1"], table["conv3_2"], table["fc6"]) == ("features.2", "features.13", "classifier.1")


def test_resnet18_layers() -> None:
    table = layer_table(meta("resnet18"), 64)
    assert names(table) == [
        ("conv1", "relu"),
        ("layer1", "layer1"),
        ("layer2", "layer2"),
        ("layer3", "layer3"),
        ("layer4", "layer4"),
        ("fc", "fc"),
        ("prob", ""),
    ]
    assert [layer.kind for layer in table] == ["conv", "block", "block", "block", "block", "linear", "prob"]
    assert table[2].shape == (128, 8, 8)


@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        ("zoo:alexnet_small", ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8", "prob"]),
        (
            "zoo:vgg_small",
            [f"conv{b}_{i}" for b in range(1, 6) for i in (1, 2)] + ["fc6", "fc7", "fc8", "prob"],
        ),
        ("zoo:resnet_small", ["conv1", "layer1", "layer2", "layer3", "layer4", "fc", "prob"]),
    ],
)
def test_zoo_layers(arch: str, expected: list[str]) -> None:
    with torch.device("meta"):
        model = build_model(arch, 10)
    table = layer_table(model, 64)
    assert [layer.name for layer in table] == expected
    assert table[-1].units == 10
    # every conv layer is the output of its ReLU
    assert all(
        isinstance(model.get_submodule(layer.module), nn.ReLU) for layer in table if layer.kind == "conv"
    )


def test_explicit_layers_by_name_and_path() -> None:
    table = layer_table(meta("alexnet"), 224, ["prob", "features.4", "conv5", "features.0", "classifier.1"])
    assert [(layer.name, layer.module, layer.kind) for layer in table] == [
        ("features.0", "features.0", "conv"),  # the conv before its ReLU: no friendly name
        ("conv2", "features.4", "conv"),  # a module path with a friendly name gets it
        ("conv5", "features.11", "conv"),
        ("classifier.1", "classifier.1", "linear"),
        ("prob", "", "prob"),
    ]  # in forward order


def test_explicit_resnet_blocks() -> None:
    table = layer_table(meta("resnet18"), 64, ["layer1.0", "layer2.1.bn2", "maxpool"])
    assert [(layer.name, layer.kind, layer.units) for layer in table] == [
        ("maxpool", "pool", 64),
        ("layer1.0", "block", 64),
        ("layer2.1.bn2", "conv", 128),
    ]
    assert table[1].rf_size == 27  # maxpool 11 + two 3x3 convs at stride 4


def test_layer_typo() -> None:
    with pytest.raises(
        ModelError, match=r"unknown layer 'conv6' \(did you mean 'conv5'\?\); layers: conv1, conv2"
    ):
        layer_table(meta("alexnet"), 224, ["conv6"])
    with pytest.raises(ModelError, match=r"unknown layer 'featres.11' \(did you mean 'features.11'\?\)"):
        layer_table(meta("alexnet"), 224, ["featres.11"])


def test_layer_listed_twice() -> None:
    with pytest.raises(ModelError, match="listed twice"):
        layer_table(meta("alexnet"), 224, ["conv1", "features.1"])


def test_input_too_small() -> None:
    with pytest.raises(ModelError, match="a 16x16 px input does not fit AlexNet"):
        layer_table(meta("alexnet"), 16)


# --- checkpoints -------------------------------------------------------------------------------------


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize("layout", ["plain", "state_dict", "model", "module_prefix"])
def test_checkpoint_layouts(tmp_path: Path, layout: str) -> None:
    source = zoo("zoo:alexnet_small", seed=1)
    state = source.state_dict()
    obj = {
        "plain": state,
        "state_dict": {"state_dict": state, "epoch": 3, "acc": 0.5},
        "model": {"model": state, "optimizer": {"lr": 0.1}},
        "module_prefix": {f"module.{k}": v for k, v in state.items()},
    }[layout]
    path = tmp_path / "ck.pt"
    torch.save(obj, path)
    target = zoo("zoo:alexnet_small", seed=2)
    assert not same_weights(source, target)
    load_weights(target, str(path))
    assert same_weights(source, target)


def test_checkpoint_of_another_architecture(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pt"
    torch.save(zoo("zoo:resnet_small").state_dict(), path)
    with pytest.raises(ModelError) as e:
        load_weights(zoo("zoo:alexnet_small"), str(path), arch="zoo:alexnet_small")
    message = str(e.value)
    assert message.startswith(
        f"checkpoint {path} does not fit zoo:alexnet_small (checkpoint for another architecture?): "
        "16 missing keys (features.0.weight, features.0.bias, features.3.weight, features.3.bias, "
        "features.6.weight, ...); 122 unexpected keys (conv1.weight, bn1.weight, "
    )
    path = tmp_path / "vgg.pt"
    torch.save(zoo("zoo:vgg_small").state_dict(), path)
    with pytest.raises(ModelError, match=r"9 shape mismatches \(checkpoint vs model\) \(features.0.weight: "):
        load_weights(zoo("zoo:alexnet_small"), str(path))


def test_checkpoint_shape_mismatch_outside_the_head(tmp_path: Path) -> None:
    state = zoo("zoo:alexnet_small").state_dict()
    state["features.3.weight"] = torch.zeros(64, 32, 3, 3)
    path = tmp_path / "ck.pt"
    torch.save(state, path)
    with pytest.raises(
        ModelError, match=r"1 shape mismatches .*features.3.weight: \[64, 32, 3, 3\] vs \[64, 32, 5, 5\]"
    ):
        load_weights(zoo("zoo:alexnet_small"), str(path))


def test_checkpoint_head_resize(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = zoo("zoo:alexnet_small", num_classes=10, seed=1)
    path = tmp_path / "ck.pt"
    torch.save(source.state_dict(), path)
    target = zoo("zoo:alexnet_small", num_classes=4, seed=2)
    head = target.classifier[6].weight.clone()
    with caplog.at_level(logging.WARNING):
        load_weights(target, str(path))
    assert "'classifier.6' has 10 outputs, the model 4" in caplog.text
    assert torch.equal(target.classifier[6].weight, head)  # the new head is kept
    assert torch.equal(target.features[0].weight, source.features[0].weight)


class NotATensor:
    """Any custom class: torch.load(weights_only=True) must refuse to unpickle it."""


def test_checkpoint_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": zoo("zoo:alexnet_small").state_dict(), "extra": NotATensor()}, path)
    with pytest.raises(ModelError) as e:
        load_weights(zoo("zoo:alexnet_small"), str(path))
    msg = str(e.value)
    assert "\n" not in msg
    assert f"checkpoint {path} was refused: it holds Python objects (test_models.NotATensor)" in msg
    assert "torch.load weights_only=True" in msg and "obj.state_dict()" in msg


class RunsCode:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo pwned",))


def test_checkpoint_carrying_code_is_refused_not_damaged(tmp_path: Path) -> None:
    # issue 11: torch 2.14.1 words this "unsupported GLOBAL posix.system whose module posix is blocked"
    path = tmp_path / "code.pt"
    torch.save({"model": RunsCode()}, path)
    with pytest.raises(ModelError, match=r"was refused: it holds Python objects \((posix|nt)\.system\)") as e:
        load_weights(zoo("zoo:alexnet_small"), str(path))
    assert "damaged" not in str(e.value) and "re-save its weights as a state_dict" in str(e.value)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"w": RunsCode()}, protocol=4))
    with pytest.warns(UserWarning, match="pickle protocol"), pytest.raises(ModelError, match="plain pickle"):
        load_weights(zoo("zoo:alexnet_small"), str(plain))


LAZY = """
from torch import nn

def lenet(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 4, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.LazyLinear(16),
                         nn.ReLU(), nn.LazyLinear(num_classes))

def lenet_fixed():  # no num_classes: its lazy 7-way head is materialized, then replaced
    return nn.Sequential(nn.Conv2d(3, 4, 5), nn.Flatten(), nn.LazyLinear(7))
"""


def test_lazy_modules_are_materialized(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "lazy_models_test.py").write_text(LAZY)
    monkeypatch.syspath_prepend(str(tmp_path))
    net = build_model("lazy_models_test:lenet", 3, input_size=20)
    assert net[4].in_features == 4 * 8 * 8 and net[-1].weight.shape == (3, 16)
    assert net.training  # the mode is restored
    state = {k: v.clone() for k, v in net.state_dict().items()}
    other = build_model("lazy_models_test:lenet", 3, input_size=20)
    load_weights(other, _save_state(tmp_path, state))  # loading works: shapes are known
    assert [info.name for info in layer_table(other, 20)][-1] == "prob"
    assert build_model("lazy_models_test:lenet_fixed", 5, input_size=12)[-1].weight.shape == (5, 4 * 8 * 8)
    with pytest.raises(ModelError, match="has lazy modules: an input size is needed"):
        build_model("lazy_models_test:lenet", 3)
    with pytest.raises(ModelError, match="4x4 px dummy forward .* failed"):
        build_model("lazy_models_test:lenet", 3, input_size=4)
    del sys.modules["lazy_models_test"]


def _save_state(tmp_path: Path, state: dict) -> str:
    path = tmp_path / "lazy.pt"
    torch.save(state, path)
    return str(path)


def test_checkpoint_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read checkpoint .*junk.pt: not a PyTorch file, or damaged"):
        load_weights(zoo("zoo:alexnet_small"), str(path))
    with pytest.raises(ModelError, match="checkpoint file not found"):
        load_weights(zoo("zoo:alexnet_small"), str(tmp_path / "missing.pt"))
    torch.save({"epoch": 3}, path)
    with pytest.raises(ModelError, match="not a state_dict"):
        load_weights(zoo("zoo:alexnet_small"), str(path))


def test_file_hash(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    data = bytes(range(256)) * 5000  # > 1 MiB chunk
    path.write_bytes(data)
    assert file_hash(path) == hashlib.sha256(data).hexdigest()[:16]


# --- torchvision weights names (never downloaded in tests) -------------------------------------------


def test_weights_meta() -> None:
    info = weights_meta("alexnet", "IMAGENET1K_V1")
    assert info is not None
    assert info["name"] == "AlexNet_Weights.IMAGENET1K_V1"
    assert info["mean"] == (0.485, 0.456, 0.406)
    assert info["std"] == (0.229, 0.224, 0.225)
    assert len(info["categories"]) == 1000
    assert (info["crop_size"], info["resize_size"]) == (224, 256)
    assert weights_meta("torchvision:resnet18", "DEFAULT")["name"] == "ResNet18_Weights.IMAGENET1K_V1"
    assert weights_meta("zoo:alexnet_small", "ResNet18_Weights.IMAGENET1K_V1") is not None
    assert weights_meta("alexnet", None) is None
    assert weights_meta("alexnet", "runs/epoch-1.pt") is None


def test_weights_meta_unknown_names() -> None:
    with pytest.raises(ModelError, match="unknown weights 'IMAGENET1K_V9' for alexnet; known: IMAGENET1K_V1"):
        weights_meta("alexnet", "IMAGENET1K_V9")
    with pytest.raises(ModelError, match="'zoo:alexnet_small' is not a torchvision architecture"):
        weights_meta("zoo:alexnet_small", "IMAGENET1K_V1")


def test_weights_name_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(self: object, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(ModelError, match="ResNet18_Weights.IMAGENET1K_V1 .*needs internet access once"):
        load_weights(meta("resnet18"), "IMAGENET1K_V1", arch="resnet18")


def test_weights_name_resizes_the_head(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    imagenet = torchvision.models.resnet18()
    monkeypatch.setattr(
        torchvision.models.WeightsEnum, "get_state_dict", lambda self, **kw: imagenet.state_dict()
    )
    model = build_model("resnet18", 7)
    load_weights(model, "IMAGENET1K_V1", arch="torchvision:resnet18")
    assert torch.equal(model.conv1.weight, imagenet.conv1.weight)
    assert model.fc.out_features == 7


# --- load_model ----------------------------------------------------------------------------------------


def test_load_model(tmp_path: Path) -> None:
    trained = zoo("zoo:vgg_small", num_classes=5, seed=1)
    first, last = tmp_path / "epoch-1.pt", tmp_path / "epoch-2.pt"
    torch.save(trained.state_dict(), first)
    torch.save({"state_dict": zoo("zoo:vgg_small", num_classes=5, seed=2).state_dict()}, last)
    net = NetworkSpec(
        arch="zoo:vgg_small", dataset="doodles", weights=str(first), layers=["conv5_2", "fc6", "prob"]
    )

    lm = load_model(net, num_classes=5, input_size=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert isinstance(lm, LoadedModel)
    assert not lm.module.training
    assert same_weights(lm.module, trained)
    assert [layer.name for layer in lm.layers] == ["conv5_2", "fc6", "prob"]
    assert lm.layer("features.33").name == "conv5_2"
    assert lm.params == sum(p.numel() for p in trained.parameters())
    assert (lm.arch, lm.num_classes, lm.input_size, lm.normalization) == ("zoo:vgg_small", 5, 64, "dataset")
    assert torch.allclose(lm.normalize(torch.full((1, 3, 2, 2), 0.75)), torch.ones(1, 3, 2, 2))

    override = load_model(net, num_classes=5, input_size=64, checkpoint=last, mean=(0, 0, 0), std=(1, 1, 1))
    assert not same_weights(override.module, trained)  # the checkpoint wins over net.weights


def test_check_weights_reads_keys_and_shapes_only(tmp_path: Path) -> None:
    # issue 11: planning checks every checkpoint before any work, without reading its tensors
    source = zoo("zoo:alexnet_small")
    path = tmp_path / "good.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    target = zoo("zoo:alexnet_small")
    before = {k: v.clone() for k, v in target.state_dict().items()}
    check_weights(target, path)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # nothing loaded
    torch.save({"classifier.6.weight": torch.zeros(3, 4)}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="does not fit"):
        check_weights(target, tmp_path / "other.pt")
    torch.save({"model": RunsCode()}, tmp_path / "code.pt")
    with pytest.raises(ModelError, match="was refused"):
        check_weights(target, tmp_path / "code.pt")
    with pytest.raises(ModelError, match="checkpoint file not found"):
        check_weights(target, tmp_path / "missing.pt")
