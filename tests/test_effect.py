"""What a unit does (issue 15, item 5): direct logit effects from hand-set weights, ablation by the
split network == by a forward hook == by zeroed weights (float64), the registry entry, run/save on
a zoo net, and the unit and layer page sections drawn from the fixture store."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from fixture_store import make_fixture_store
from torch import nn

from sitegen.analyses import _ablate, effect
from sitegen.analyses.registry import REGISTRY, Context, names
from sitegen.errors import SpecError
from sitegen.mine import mine
from sitegen.models import build_model, layer_table
from sitegen.models.types import LayerInfo, LoadedModel
from sitegen.render import check_site, render_site
from sitegen.spec import AblationSpec, AnalysesSpec, EffectSpec
from sitegen.store import Store
from sitegen.store.formats import EffectDoc

# --- the direct effect -------------------------------------------------------------------------------


def test_direct_effect_top_and_bottom_classes_of_known_weights() -> None:
    w = np.array(  # [K = 4 classes, U = 3 units]
        [
            [0.5, -1.0, 0.0],
            [2.0, 0.3, 0.0],
            [-3.0, 0.3, 0.0],
            [1.0, 4.0, 0.0],
        ]
    )
    top, top_w, bottom, bottom_w, contribution = effect.direct_effect(w, np.array([2.0, 0.5, 7.0]), 2)
    np.testing.assert_array_equal(top, [[1, 3], [3, 1], [0, 1]])  # unit 1: tie 0.3/0.3 -> class 1 first
    np.testing.assert_array_equal(top_w, [[2.0, 1.0], [4.0, 0.3], [0.0, 0.0]])
    np.testing.assert_array_equal(bottom, [[2, 0], [0, 1], [0, 1]])
    np.testing.assert_array_equal(bottom_w, [[-3.0, 0.5], [-1.0, 0.3], [0.0, 0.0]])
    np.testing.assert_array_equal(contribution, [4.0, 2.0, 0.0])  # max_c W[c, j] * mean[j]
    assert effect.direct_effect(w, np.ones(3), 9)[0].shape == (3, 4)  # n capped at K


class _Pooled(nn.Module):
    """conv -> ReLU -> global pool -> linear, with the pool chosen."""

    def __init__(self, pool: nn.Module, flatten_size: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = pool
        self.fc = nn.Linear(flatten_size, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.relu(self.conv(x))), 1))


@pytest.mark.parametrize(
    ("arch", "layer", "pooling"),
    [
        ("zoo:alexnet_small", "fc7", "none"),
        ("zoo:vgg_small", "fc7", "none"),
        ("zoo:resnet_small", "layer4", "mean"),
    ],
)
def test_feeding_layer_of_the_zoo_nets(arch: str, layer: str, pooling: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, 6).eval()
    layers = layer_table(model, 64)
    head = effect.classifier(model)
    assert head is not None
    info, how = effect.feeding_layer(model, layers, head[0], torch.rand(4, 3, 64, 64)) or (None, None)
    assert info is not None and (info.name, how) == (layer, pooling)


@pytest.mark.parametrize(
    ("pool", "size", "want"),
    [
        (nn.AdaptiveAvgPool2d(1), 4, "mean"),
        (nn.AdaptiveMaxPool2d(1), 4, "max"),
        (nn.AdaptiveAvgPool2d(2), 16, None),  # spatially flattened: no one unit per input
    ],
)
def test_feeding_layer_through_global_pooling(pool: nn.Module, size: int, want: str | None) -> None:
    torch.manual_seed(1)
    model = _Pooled(pool, size).eval()
    layers = (
        LayerInfo("c", "relu", "conv", (4, 6, 6), 4, 3, 1, 0.0),
        LayerInfo("fc", "fc", "linear", (5,), 5, 6, 6, 2.5),
    )
    got = effect.feeding_layer(model, layers, "fc", torch.rand(3, 3, 6, 6))
    assert (got[1] if got else None) == want


# --- ablation ----------------------------------------------------------------------------------------


class _Residual(nn.Module):
    """Two conv layers and a skip connection around the second (its input crosses a cut there)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.relu3 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h1 = self.relu1(self.conv1(x))
        h2 = self.relu2(self.conv2(h1))
        return self.fc(torch.flatten(self.pool(self.relu3(h2 + h1)), 1))


class _Untraceable(_Residual):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(x.sum()) > -1e9:  # data-dependent control flow: torch.fx cannot trace it
            return super().forward(x)
        return x


def _net(cls: type[nn.Module] = _Residual) -> nn.Module:
    torch.manual_seed(2)
    return cls().double().eval()


def _zeroed_weights(model: nn.Module, conv: str, unit: int) -> nn.Module:
    """A copy of ``model`` whose conv ``conv`` has filter ``unit`` and its bias zeroed (ReLU(0) = 0)."""
    clone = _net(type(model))
    clone.load_state_dict(model.state_dict())
    with torch.no_grad():
        getattr(clone, conv).weight[unit] = 0
        getattr(clone, conv).bias[unit] = 0
    return clone


@pytest.mark.parametrize("cls", [_Residual, _Untraceable])
@pytest.mark.parametrize(("module", "conv"), [("relu1", "conv1"), ("relu2", "conv2")])
def test_split_ablation_equals_the_hook_and_zeroed_weights_in_float64(
    cls: type[nn.Module], module: str, conv: str
) -> None:
    model = _net(cls)
    x = torch.rand(5, 3, 7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    split = _ablate.split_at(model, module)
    assert split.traced is (cls is _Residual)
    with torch.inference_mode():
        values = split.prefix(x)
        np.testing.assert_allclose(split.rest(values, [], 5).numpy(), model(x).numpy(), rtol=0, atol=1e-12)
        both = split.rest(values, [1, 3], 5).reshape(2, 5, 3)
        for g, u in enumerate((1, 3)):
            with _ablate.zeroed(getattr(model, module), [u]):
                hooked = model(x)
            weights = _zeroed_weights(model, conv, u)(x)
            np.testing.assert_allclose(both[g].numpy(), hooked.numpy(), rtol=0, atol=1e-12)
            np.testing.assert_allclose(hooked.numpy(), weights.numpy(), rtol=0, atol=1e-12)
            assert not torch.allclose(hooked, model(x))  # the unit mattered: the check can fail


def test_unit_without_outgoing_weights_has_no_effect_and_batches_agree() -> None:
    model = _net()
    with torch.no_grad():
        model.conv2.weight[:, 2] = 0  # unit 2 of relu1 feeds conv2 nothing ...
        model.fc.weight[:, 2] = 0  # ... and reaches fc only through the skip, cut here
    x = torch.rand(7, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    labels = np.array([0, 1, 2, 0, 1, 2, 0])
    whole = _ablate.ablate(_ablate.split_at(model, "relu1"), x, labels, [0, 1, 2, 3], batch_rows=64)
    np.testing.assert_array_equal(whole.logit[2], whole.base_logit)
    assert np.abs(whole.logit[0] - whole.base_logit).max() > 1e-6
    for rows in (1, 3, 10):  # images and units in other groupings: the same numbers
        part = _ablate.ablate(_ablate.split_at(model, "relu1"), x, labels, [0, 1, 2, 3], batch_rows=rows)
        np.testing.assert_allclose(part.logit, whole.logit, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(part.correct, whole.correct)
    scores = effect.ablation_scores(whole, labels, 3, [0, 1, 2, 3], 2)
    assert scores.logit_drop[2] == 0 and scores.accuracy[2] == scores.base_accuracy
    np.testing.assert_array_equal(scores.drops[2], [0, 0])


def test_ablation_scores_of_known_logits() -> None:
    ab = _ablate.Ablated(
        base_logit=np.array([3.0, 3.0, 2.0, 1.0]),
        base_correct=np.array([True, True, True, False]),
        logit=np.array([[1.0, 2.0, 2.0, 1.0], [3.0, 3.0, 0.0, 2.0]]),
        correct=np.array([[False, True, True, False], [True, True, False, True]]),
    )
    labels = np.array([0, 0, 2, 3])  # class 1: no image
    s = effect.ablation_scores(ab, labels, 4, [5, 9], 2)
    assert s.base_accuracy == 0.75 and s.base_logit == 2.25
    np.testing.assert_allclose(s.accuracy, [0.5, 0.75])
    np.testing.assert_allclose(s.logit_drop, [0.75, 0.25])  # unit 5: (2 + 1 + 0 + 0) / 4
    np.testing.assert_array_equal(s.classes, [[0, 2], [2, 0]])  # class 1 has no image: never listed
    np.testing.assert_allclose(s.drops, [[1.5, 0.0], [2.0, 0.0]])
    np.testing.assert_allclose(s.class_accuracy, [[-0.5, 0.0], [-1.0, 0.0]])
    np.testing.assert_array_equal(s.class_images, [2, 0, 1, 1])


# --- the registry entry, run and save ----------------------------------------------------------------


def test_registered_on_by_default_after_distribution() -> None:
    kind = REGISTRY["effect"]
    assert kind.analysis() is effect and kind.params is EffectSpec is effect.Params and kind.doc is EffectDoc
    a = AnalysesSpec()
    assert kind.enabled(a) and not a.effect.ablation.enabled and a.effect.ablation.layers == "last"
    order = names()
    assert order.index("distribution") < order.index("effect") < order.index("stroke")
    assert "forwards" in AblationSpec.model_fields["enabled"].description  # the cost is stated


class _Probe(torch.utils.data.Dataset):
    def __init__(self, n: int, size: int) -> None:
        g = torch.Generator().manual_seed(5)
        self.x = torch.rand(n, 3, size, size, generator=g)
        self.y = [i % 4 for i in range(n)]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], self.y[i]


def _alexnet(tmp_path: Path) -> tuple[Context, object, LoadedModel]:
    torch.manual_seed(6)
    module = build_model("zoo:alexnet_small", 4).eval()
    layers = layer_table(module, 32)
    loaded = LoadedModel(module, "zoo:alexnet_small", 4, 32, (0.5,) * 3, (0.25,) * 3, layers, 0)
    probe = _Probe(20, 32)
    mined = mine(loaded, probe, k=3, batch_size=8, activations=tmp_path / "activations.npy")
    ctx = Context(
        loaded=loaded,
        network="tiny",
        image=lambda i: probe.x[i],
        picture=lambda i: np.zeros((32, 32, 3), np.uint8),
        class_names=("a", "b", "c", "d"),
        labels=np.array(probe.y),
        shown={"conv5": [0, 3, 7], "fc7": [1, 2]},
        weighted={},
        device=torch.device("cpu"),
        seed=0,
        problem=lambda loc, msg: f"{'.'.join(map(str, loc))}: {msg}",
    )
    return ctx, mined, loaded


def test_run_and_save_on_a_zoo_net(tmp_path: Path) -> None:
    ctx, mined, loaded = _alexnet(tmp_path)
    p = EffectSpec(classes=3, ablation=AblationSpec(enabled=True, images=12, batch_size=10))
    result = effect.run(ctx, mined, p)  # type: ignore[arg-type]
    assert result is not None and result.direct is not None
    d = result.direct
    assert (d.layer, d.head, d.pooling, d.mean_source, d.mean_images) == (
        "fc7",
        "classifier.6",
        "none",
        "activations",
        20,
    )
    # the mean fc7 activation over all 20 images, by hand (float16 storage: relative 1e-3)
    feats: list[torch.Tensor] = []
    fc7 = dict(loaded.module.named_modules())["classifier.5"]
    handle = fc7.register_forward_hook(lambda _m, _a, out: feats.append(out))
    with torch.inference_mode():
        loaded.module(loaded.normalize(torch.stack([ctx.image(i) for i in range(20)])))
    handle.remove()
    want = feats[0].double().mean(0).numpy()
    np.testing.assert_allclose(d.mean, want, rtol=2e-3, atol=2e-3 * float(np.abs(want).max()))
    w = loaded.module.classifier[6].weight.detach().double().numpy()
    np.testing.assert_array_equal(d.top[:, 0], w.argmax(0))
    np.testing.assert_array_equal(d.bottom[:, 0], w.argmin(0))
    np.testing.assert_allclose(d.contribution, (w * d.mean).max(0), rtol=1e-12)
    a = result.ablation["conv5"]
    assert set(result.ablation) == {"conv5"} and a.units == [0, 3, 7] and a.images == 12
    picks = list(range(12))  # probe_picks: one per class in class order, then the second...
    x = loaded.normalize(torch.stack([ctx.image(i) for i in picks]))
    y = torch.tensor([ctx.labels[i] for i in picks])
    with torch.inference_mode():
        base = loaded.module(x)
        assert a.base_accuracy == pytest.approx(float((base.argmax(1) == y).double().mean()))
        with _ablate.zeroed(dict(loaded.module.named_modules())["features.11"], [3]):
            z = loaded.module(x)
    drop = (base.gather(1, y[:, None]) - z.gather(1, y[:, None])).double().mean()
    assert a.logit_drop[1] == pytest.approx(float(drop), rel=1e-4, abs=1e-5)
    doc = effect.save(ctx, result, tmp_path)
    again = EffectDoc.model_validate_json(doc.model_dump_json())
    assert (
        again.direct is not None
        and len(again.direct.top) == 256
        and again.ablation["conv5"].units == [0, 3, 7]
    )
    off = EffectSpec(ablation=AblationSpec(enabled=False))
    assert not effect.run(ctx, mined, off).ablation  # type: ignore[arg-type, union-attr]


def test_unknown_ablation_layer_is_one_line(tmp_path: Path) -> None:
    ctx, _, loaded = _alexnet(tmp_path)
    p = EffectSpec(ablation=AblationSpec(enabled=True, layers=["conv9"]))
    with pytest.raises(SpecError, match=r"analyses\.effect\.ablation\.layers: none of \['conv9'\]"):
        effect.check(p, loaded.layers, ctx.problem, "tiny")


# --- the sections ------------------------------------------------------------------------------------


def _with_effect(root: Path) -> Path:
    """The fixture store, with an effect document: direct effects on fc6, ablations of conv2."""
    store_root = make_fixture_store(root / "store", networks=("tiny-alex",))
    store = Store(store_root)
    net = store.read_network("tiny-alex")
    units = {lay.name: lay.units for lay in net.layers}
    classes = len(store.read_dataset(net.dataset).class_names)
    rng = np.random.default_rng(0)
    w = rng.normal(size=(classes, units["fc6"]))
    mean = rng.uniform(0, 2, units["fc6"])
    top, top_w, bottom, bottom_w, contribution = effect.direct_effect(w, mean, 3)
    direct = effect.Direct(
        "fc6", "classifier.4", "none", mean, 48, "activations", top, top_w, bottom, bottom_w, contribution
    )
    ab = _ablate.Ablated(
        base_logit=rng.normal(size=24),
        base_correct=rng.uniform(size=24) < 0.7,
        logit=rng.normal(size=(4, 24)),
        correct=rng.uniform(size=(4, 24)) < 0.6,
    )
    labels = np.arange(24) % classes
    scores = effect.ablation_scores(ab, labels, classes, [0, 1, 2, 3], 3)
    doc = effect.document(effect.Result(3, direct, {"conv2": scores}))
    store.write_analysis("tiny-alex", "epoch-2", doc)
    m = store.read_manifest("tiny-alex", "epoch-2")
    store.write_manifest(m.model_copy(update={"techniques": [*m.techniques, "effect"]}))
    return store_root


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("effect")
    render_site(_with_effect(root), root / "site")
    return root / "site"


def test_unit_page_shows_the_direct_effect_with_named_numbers(site: Path) -> None:
    doc = Store(site.parent / "store").read_analysis("tiny-alex", "epoch-2", EffectDoc)
    assert doc.direct is not None
    text = (site / "tiny-alex/fc6/unit-0002.html").read_text(encoding="utf-8")
    assert (
        'id="effect"' in text
        and "What this unit does" in text
        and "Direct effect on the class logits" in text
    )
    assert "raises these logits most" in text and "lowers these logits most" in text
    assert "W × mean" in text and "per unit of this unit&#39;s activation" in text
    chips = re.findall(r'<td class="bar-label"><(?:a|span) class="chip[^"]*"[^>]*>([^<]+)</', text)
    # the top 3 classes with a positive weight, the bottom 3 with a negative one
    want = sum(w > 0 for w in doc.direct.top_w[2]) + sum(w < 0 for w in doc.direct.bottom_w[2])
    assert len(chips) == want and want >= 3
    w = doc.direct.top_w[2][0]
    assert f"{w:+.3g}".replace("-", "−") in text
    assert not check_site(site)


def test_unit_page_of_an_ablated_layer_and_none_elsewhere(site: Path) -> None:
    text = (site / "tiny-alex/conv2/unit-0001.html").read_text(encoding="utf-8")
    assert "Ablation: zeroing this unit" in text and "classes hurt most when it is zeroed" in text
    assert re.search(r"accuracy \d+\.\d% → \d+\.\d% \([+−][\d.]+ pp\)", text)
    assert "Direct effect" not in text
    assert 'id="effect"' not in (site / "tiny-alex/conv2/unit-0005.html").read_text(encoding="utf-8")
    assert 'id="effect"' not in (site / "tiny-alex/conv1/unit-0001.html").read_text(encoding="utf-8")
    assert 'id="effect"' not in (site / "tiny-alex/@epoch-1/fc6/unit-0001.html").read_text(encoding="utf-8")


def test_layer_pages_list_the_largest_effects(site: Path) -> None:
    doc = Store(site.parent / "store").read_analysis("tiny-alex", "epoch-2", EffectDoc)
    assert doc.direct is not None
    text = (site / "tiny-alex/fc6/index.html").read_text(encoding="utf-8")
    assert 'href="#effect"' in text and "Largest direct effects on the class logits" in text
    best = max(range(len(doc.direct.contribution)), key=lambda u: doc.direct.contribution[u])
    first = re.search(
        r'<table class="effect-units">.*?<tbody>\s*<tr><td>(?:<a href="([^"]+)">)?#(\d+)', text, re.S
    )
    assert first is not None and int(first.group(2)) == best
    conv2 = (site / "tiny-alex/conv2/index.html").read_text(encoding="utf-8")
    assert "Units whose ablation costs most" in conv2 and 'href="unit-0000.html"' in conv2


def test_layer_grid_sorts_by_the_effect(site: Path) -> None:
    doc = Store(site.parent / "store").read_analysis("tiny-alex", "epoch-2", EffectDoc)
    assert doc.direct is not None
    text = (site / "tiny-alex/fc6/index.html").read_text(encoding="utf-8")
    assert '<option value="effect">direct effect, high first</option>' in text
    got = {int(u): float(v) for u, v in re.findall(r'data-unit="(\d+)"[^>]*data-effect="([^"]+)"', text)}
    assert got and all(v == pytest.approx(doc.direct.contribution[u], rel=1e-3) for u, v in got.items())
    conv2 = (site / "tiny-alex/conv2/index.html").read_text(encoding="utf-8")
    assert "ablation effect, high first" in conv2 and 'data-effect=""' in conv2  # unablated units
    assert 'option value="effect"' not in (site / "tiny-alex/conv1/index.html").read_text(encoding="utf-8")
