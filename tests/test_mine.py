"""Mining: exact top-k against a brute-force reference, ties, batching, empty slots, hooks."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from sitegen.errors import ModelError
from sitegen.mine import LayerTopK, Mined, mine
from sitegen.models.types import LayerInfo, LoadedModel

ROWS, COLS = 10, 14  # non-square on purpose: a row/col swap cannot pass


class TinyNet(nn.Module):
    """Conv-ReLU-pool-conv-ReLU-pool-fc-ReLU-fc with in-place ReLUs, like torchvision alexnet."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),  # 0
            nn.ReLU(inplace=True),  # 1: conv1
            nn.MaxPool2d(2),  # 2: 10x14 -> 5x7
            nn.Conv2d(4, 5, 3, padding=1),  # 3: conv2_pre (its output is then overwritten in place)
            nn.ReLU(inplace=True),  # 4: conv2
        )
        self.pool = nn.AdaptiveMaxPool2d((1, 2))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(10, 6),  # 1
            nn.ReLU(inplace=True),  # 2: fc1
            nn.Linear(6, 3),  # 3: fc2
        )
        # Small integer weights and dyadic inputs keep every activation exact in float32, so any
        # batch size, memory format or summation order gives bit-identical values.
        with torch.no_grad():
            for i, p in enumerate(self.parameters()):
                p.copy_(((torch.arange(p.numel()) * (3 + 2 * i) + i) % 5 - 2).view_as(p).float())
            # Dead units: conv2 unit 0 and fc1 unit 0 are 0 for every image (all tie; position (0, 0)).
            self.features[3].bias[0] = -1000
            self.classifier[1].bias[0] = -1000

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def tiny_layers() -> tuple[LayerInfo, ...]:
    def info(name: str, module: str, kind: str, shape: tuple[int, ...]) -> LayerInfo:
        return LayerInfo(name, module, kind, shape, shape[0], 1, 1, 0.0)

    return (
        info("conv1", "features.1", "conv", (4, ROWS, COLS)),
        info("conv2_pre", "features.3", "conv", (5, ROWS // 2, COLS // 2)),
        info("conv2", "features.4", "conv", (5, ROWS // 2, COLS // 2)),
        info("fc1", "classifier.2", "linear", (6,)),
        info("fc2", "classifier.3", "linear", (3,)),
        info("prob", "", "prob", (3,)),
    )


def tiny_model(layers: tuple[LayerInfo, ...] | None = None, net: nn.Module | None = None) -> LoadedModel:
    # mean 0.5, std 0.25: normalization maps eighths to exact multiples of 0.5.
    return LoadedModel(
        module=(net or TinyNet()).eval(),
        arch="tiny",
        num_classes=3,
        input_size=ROWS,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        layers=layers if layers is not None else tiny_layers(),
        params=0,
    )


class Probe(Dataset):
    """(image [3, 10, 14] in [0, 1], label) pairs from a tensor."""

    def __init__(self, images: torch.Tensor, labels: list[int] | None = None) -> None:
        self.images = images
        self.labels = labels if labels is not None else [i % 3 for i in range(len(images))]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], self.labels[i]


def tiny_images(n: int, duplicates: dict[int, int] | None = None) -> torch.Tensor:
    """``n`` seeded random images in eighths; ``duplicates[i] = j`` makes image i a copy of j."""
    generator = torch.Generator().manual_seed(n)
    images = torch.randint(0, 8, (n, 3, ROWS, COLS), generator=generator) / 8
    for i, j in (duplicates or {}).items():
        images[i] = images[j]
    return images


def reference(model: LoadedModel, images: torch.Tensor, k: int) -> dict[str, LayerTopK]:
    """Brute force: keep ALL activations, numpy max/argmax per unit and image, sort by (-value, index)."""
    acts: dict[str, np.ndarray] = {}
    named = dict(model.module.named_modules())
    handles = [
        named[info.module].register_forward_hook(
            lambda _m, _a, out, name=info.name: acts.__setitem__(name, out.detach().clone().numpy())
        )
        for info in model.layers
        if info.module
    ]
    with torch.no_grad():
        out = model.module(model.normalize(images))
    for h in handles:
        h.remove()
    acts["prob"] = torch.softmax(out, dim=1).numpy()
    tables = {}
    n = len(images)
    for name, a in acts.items():
        flat = a.reshape(n, a.shape[1], -1)  # [N, U, H*W] (H*W = 1 for linear layers)
        cols = a.shape[3] if a.ndim == 4 else 1
        value, where = flat.max(axis=2), flat.argmax(axis=2)  # argmax: first maximum
        units = a.shape[1]
        values = np.full((units, k), np.nan, np.float32)
        imgs = np.full((units, k), -1, np.int64)
        rows = np.full((units, k), -1, np.int32)
        cols_ = np.full((units, k), -1, np.int32)
        for u in range(units):
            order = np.lexsort((np.arange(n), -value[:, u]))[:k]
            m = len(order)
            values[u, :m], imgs[u, :m] = value[order, u], order
            rows[u, :m], cols_[u, :m] = where[order, u] // cols, where[order, u] % cols
        tables[name] = LayerTopK(values, imgs, rows, cols_)
    return tables


def assert_same_tables(got: dict[str, LayerTopK], want: dict[str, LayerTopK]) -> None:
    assert list(got) == list(want)
    for name in want:
        g, w = got[name], want[name]
        np.testing.assert_array_equal(g.values, w.values, err_msg=f"{name} values")
        np.testing.assert_array_equal(g.images, w.images, err_msg=f"{name} images")
        np.testing.assert_array_equal(g.rows, w.rows, err_msg=f"{name} rows")
        np.testing.assert_array_equal(g.cols, w.cols, err_msg=f"{name} cols")
        assert g.values.dtype == np.float32 and g.images.dtype == np.int64
        assert g.rows.dtype == np.int32 and g.cols.dtype == np.int32


def assert_same_mined(a: Mined, b: Mined) -> None:
    assert_same_tables(a.layers, b.layers)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.top5, b.top5)
    np.testing.assert_array_equal(a.top5_prob, b.top5_prob)
    if a.features is None or b.features is None:
        assert a.features is None and b.features is None
    else:
        np.testing.assert_array_equal(a.features, b.features)


# Images 7 and 12 copy image 2 (ties across batches), 9 copies 8 (a tie inside a batch).
DUPLICATES = {7: 2, 12: 2, 9: 8}


def test_matches_brute_force_reference() -> None:
    model = tiny_model()
    images = tiny_images(23, DUPLICATES)
    mined = mine(model, Probe(images), k=5, batch_size=4)
    assert_same_tables(mined.layers, reference(model, images, k=5))
    # Dead units tie on 0 over all images: ranked by image index, maximum at (0, 0).
    for name in ("conv2", "fc1"):
        t = mined.layers[name]
        assert (t.values[0] == 0).all() and (t.images[0] == np.arange(5)).all(), name
        assert (t.rows[0] == 0).all() and (t.cols[0] == 0).all(), name
        assert (t.values[1:, 0] > 0).all(), name
    # conv2_pre hooks the conv whose output the in-place ReLU overwrites next.
    assert (mined.layers["conv2_pre"].values[0] < 0).all()
    # Duplicates tie everywhere: 2, 7 and 12 are adjacent in that order wherever they all appear.
    for t in mined.layers.values():
        for row in t.images:
            hits = [i for i in row if i in (2, 7, 12)]
            assert hits == sorted(hits)
    neighbours = {pair for t in mined.layers.values() for row in t.images for pair in itertools.pairwise(row)}
    assert {(2, 7), (8, 9)} <= neighbours, "the example must contain ties across and within batches"


def test_ties_broken_by_image_index() -> None:
    images = tiny_images(1).expand(11, -1, -1, -1).clone()  # eleven identical images
    mined = mine(tiny_model(), Probe(images), k=4, batch_size=3)
    for name, t in mined.layers.items():
        assert (t.images == np.arange(4)).all(), name
        assert (t.values == t.values[:, :1]).all(), name
        # Same map in every image: same position of the maximum.
        assert (t.rows == t.rows[:, :1]).all() and (t.cols == t.cols[:, :1]).all(), name


def test_batch_size_and_memory_format_do_not_change_results() -> None:
    model = tiny_model()
    probe = Probe(tiny_images(37, DUPLICATES))
    one = mine(model, probe, k=6, batch_size=1, features=True)
    assert_same_mined(one, mine(model, probe, k=6, batch_size=32, features=True))
    assert_same_mined(one, mine(model, probe, k=6, batch_size=5, features=True, channels_last=False))


def test_fewer_images_than_k_leaves_empty_slots() -> None:
    model = tiny_model()
    images = tiny_images(3)
    mined = mine(model, Probe(images), k=5, batch_size=2)
    assert_same_tables(mined.layers, reference(model, images, k=5))
    for t in mined.layers.values():
        assert t.k == 5
        assert (t.images[:, 3:] == -1).all() and (t.rows[:, 3:] == -1).all() and (t.cols[:, 3:] == -1).all()
        assert np.isnan(t.values[:, 3:]).all() and not np.isnan(t.values[:, :3]).any()
        assert sorted(t.images[0, :3]) == [0, 1, 2]


def test_linear_and_prob_layers() -> None:
    model = tiny_model()
    images = tiny_images(8)
    mined = mine(model, Probe(images, labels=[2, 0, 1, 1, 0, 2, 2, 1]), k=3, batch_size=3)
    for name in ("fc1", "fc2", "prob"):
        t = mined.layers[name]
        assert (t.rows == 0).all() and (t.cols == 0).all()
    with torch.no_grad():
        prob = torch.softmax(model.module(model.normalize(images)), dim=1).numpy()
    # prob unit c = class c: its best image is the most confident one.
    np.testing.assert_array_equal(mined.layers["prob"].values[:, 0], prob.max(axis=0))
    np.testing.assert_array_equal(mined.layers["prob"].images[:, 0], prob.argmax(axis=0))
    # Predictions: 3 classes, so slots 4 and 5 of the top-5 are padding.
    order = np.lexsort((np.broadcast_to(np.arange(3), prob.shape), -prob), axis=1)
    np.testing.assert_array_equal(mined.top5[:, :3], order)
    assert (mined.top5[:, 3:] == -1).all() and (mined.top5_prob[:, 3:] == 0).all()
    np.testing.assert_array_equal(mined.top5_prob[:, :3], np.take_along_axis(prob, order, axis=1))
    np.testing.assert_array_equal(mined.labels, [2, 0, 1, 1, 0, 2, 2, 1])
    assert mined.labels.dtype == np.int64 and mined.top5.dtype == np.int64
    assert mined.top5_prob.dtype == np.float32
    assert mined.features is None


def test_features_are_the_input_of_the_last_linear() -> None:
    model = tiny_model()
    images = tiny_images(7)
    mined = mine(model, Probe(images), k=2, batch_size=3, features=True)
    with torch.no_grad():
        net = model.module
        fc1 = net.classifier[:3](net.pool(net.features(model.normalize(images))))
    assert mined.features is not None and mined.features.dtype == np.float32
    np.testing.assert_array_equal(mined.features, fc1.numpy())


def test_inplace_relu_model_is_left_unchanged() -> None:
    model = tiny_model()
    images = tiny_images(9)
    with torch.no_grad():
        before = model.module(model.normalize(images))
    model.module.train()
    progress: list[tuple[int, int]] = []
    mine(model, Probe(images), k=3, batch_size=4, progress=lambda d, n: progress.append((d, n)))
    assert progress == [(4, 9), (8, 9), (9, 9)]
    assert model.module.training, "the training flag is restored"
    model.module.eval()
    for m in model.module.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks, "hooks are removed"
    with torch.no_grad():
        torch.testing.assert_close(model.module(model.normalize(images)), before, rtol=0, atol=0)


def test_unknown_module_lists_valid_paths() -> None:
    layers = (LayerInfo("conv9", "features.99", "conv", (4, 1, 1), 4, 1, 1, 0.0),)
    with pytest.raises(ModelError, match=r"'conv9' \(module 'features.99'\).*'features.1'"):
        mine(tiny_model(layers), Probe(tiny_images(2)), k=1)


def test_unit_count_mismatch_is_reported() -> None:
    layers = (LayerInfo("conv1", "features.1", "conv", (7, ROWS, COLS), 7, 1, 1, 0.0),)
    with pytest.raises(ModelError, match="7 units"):
        mine(tiny_model(layers), Probe(tiny_images(2)), k=1)


class SharedReLU(nn.Module):
    """One ReLU module called twice per forward: its 'output' is ambiguous."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.relu(self.conv(x)).amax(dim=(2, 3))))


def test_module_running_twice_is_refused() -> None:
    layers = (LayerInfo("r", "relu", "conv", (2, ROWS, COLS), 2, 1, 1, 0.0),)
    with pytest.raises(ModelError, match="more than once"):
        mine(tiny_model(layers, SharedReLU()), Probe(tiny_images(2)), k=1)


def test_empty_probe_gives_empty_predictions_and_slots() -> None:
    mined = mine(tiny_model(), Probe(tiny_images(0)), k=2, features=True)
    assert mined.labels.shape == (0,) and mined.top5.shape == (0, 5) and mined.top5_prob.shape == (0, 5)
    assert mined.features is not None and mined.features.shape == (0, 6)
    assert (mined.layers["conv1"].images == -1).all() and mined.layers["conv1"].images.shape == (4, 2)


# --- per-image activations (issue 15, item 1) --------------------------------------------------------


def test_activations_file_holds_every_units_maximum_per_image(tmp_path) -> None:
    model = tiny_model()
    images = tiny_images(23, DUPLICATES)
    path = tmp_path / "acts" / "activations.npy"
    mined = mine(model, Probe(images), k=5, batch_size=4, activations=path)
    acts = mined.activations
    assert acts is not None and acts.path == path
    array = acts.open()
    assert array.dtype == np.float16 and array.shape == (23, sum(i.units for i in model.layers))
    assert list(acts.offsets) == [i.name for i in model.layers]
    for name, topk in mined.layers.items():
        col = acts.layer(name, array).astype(np.float32)  # [N, U]
        assert col.shape == (23, model.layers[list(acts.offsets).index(name)].units)
        # the top-k values are the k largest of each unit's column, at the top-k images
        want = np.sort(col, axis=0)[::-1][:5].T
        np.testing.assert_array_equal(want, topk.values.astype(np.float16).astype(np.float32), err_msg=name)
        np.testing.assert_array_equal(
            np.take_along_axis(col.T, topk.images, 1), topk.values.astype(np.float16), err_msg=name
        )
    # dead units are 0 on every image (post-ReLU), conv2_pre keeps its negative maxima
    assert not acts.layer("conv2", array)[:, 0].any() and (acts.layer("conv2_pre", array)[:, 0] < 0).all()
    # the same numbers whatever the batch size; without the keyword nothing is written
    again = mine(model, Probe(images), k=5, batch_size=7, activations=tmp_path / "b.npy")
    assert again.activations is not None
    np.testing.assert_array_equal(again.activations.open(), array)
    assert mine(model, Probe(images), k=5).activations is None


def test_activations_round_trip_through_json(tmp_path) -> None:
    from sitegen.mine import Activations

    acts = Activations(tmp_path / "activations.npy", {"a": 0, "b": 3}, {"a": 3, "b": 2})
    assert Activations.from_json(tmp_path, acts.to_json()) == acts and acts.columns == 5


@pytest.mark.parametrize("chunk", [2, 100, 1 << 20])  # bytes per read: one row per read .. all rows at once
def test_layer_columns_read_exactly_what_a_memory_map_holds(tmp_path: Path, monkeypatch, chunk: int) -> None:
    from sitegen.mine import Activations, LayerColumns

    rng = np.random.default_rng(0)
    values = rng.normal(size=(37, 23)).astype(np.float16)
    np.save(tmp_path / "a.npy", values)
    acts = Activations(tmp_path / "a.npy", {"x": 0, "y": 5, "z": 22}, {"x": 5, "y": 17, "z": 1})
    monkeypatch.setattr(LayerColumns, "CHUNK", chunk)
    for name in acts.offsets:
        cols = acts.layer(name)
        assert isinstance(cols, LayerColumns) and cols.shape == (37, acts.units[name])
        ref = acts.layer(name, acts.open())
        for a, b in [(0, None), (1, 3), (2, 2), (0, 1), (-1, None)]:
            np.testing.assert_array_equal(cols[:, a:b], ref[:, a:b])
    with pytest.raises(IndexError):
        acts.layer("y")[1:, 0:2]
