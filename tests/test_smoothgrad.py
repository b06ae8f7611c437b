"""SmoothGrad (Smilkov et al. 2017): the analysis (float64 against a hand loop, σ = 0 = the plain
gradient), its registry entry and its network-page section (issue 12: one module, one section, one
test file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fixture_store import make_fixture_store
from torch import nn

from sitegen.analyses import smoothgrad
from sitegen.analyses.registry import REGISTRY, Context, Kind, names, register
from sitegen.errors import RenderError
from sitegen.mine import LayerTopK, Mined
from sitegen.models.types import LayerInfo, LoadedModel
from sitegen.render import check_site, render_site
from sitegen.spec import AnalysesSpec, SmoothGradSpec
from sitegen.store import Store, codecs
from sitegen.store.formats import GradCamDoc, SmoothGradDoc, SmoothGradImage

N_CLASSES = 3


def _net(dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 3 * 4, N_CLASSES),
    )
    return net.to(dtype).eval()


def _images(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Two non-square 6 x 8 images with distinct ranges (so σ differs per image)."""
    x = torch.arange(2 * 3 * 6 * 8, dtype=dtype).reshape(2, 3, 6, 8)
    return torch.stack([torch.sin(x[0] / 7) * 0.5 + 0.5, torch.cos(x[1] / 5) * 0.2 + 0.3])


def _hand_loop(
    net: nn.Module, x: torch.Tensor, classes: list[int], n: int, noise: float, seed: int
) -> torch.Tensor:
    """Eq. 3 written out: one image, one noisy copy, one gradient at a time."""
    eps = torch.randn((n, *x.shape), generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    out = torch.zeros_like(x)
    for b in range(len(x)):
        sigma = noise * float(x[b].max() - x[b].min())
        for i in range(n):
            xi = (x[b] + sigma * eps[i, b]).clone().requires_grad_(True)
            net(xi[None])[0, classes[b]].backward()
            assert xi.grad is not None
            out[b] += xi.grad / n
    return out


@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_smooth_grad_matches_the_hand_loop_in_float64(batch_size: int) -> None:
    net, x, classes = _net(), _images(), [2, 0]
    got = smoothgrad.smooth_grad(
        net,
        x,
        classes,
        samples=7,
        noise=0.15,
        generator=torch.Generator().manual_seed(3),
        batch_size=batch_size,
    )
    want = _hand_loop(net, x, classes, 7, 0.15, 3)
    assert got.dtype == torch.float64 and got.shape == x.shape
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    assert float(got.abs().max()) > 0


def test_zero_noise_is_the_plain_gradient() -> None:
    net, x, classes = _net(), _images(), [1, 2]
    xg = x.clone().requires_grad_(True)
    net(xg).gather(1, torch.tensor([[1], [2]])).sum().backward()
    assert xg.grad is not None
    for samples in (1, 4):
        got = smoothgrad.smooth_grad(net, x, classes, samples=samples, noise=0.0)
        torch.testing.assert_close(got, xg.grad, rtol=1e-12, atol=1e-14)


def test_noise_changes_the_map_and_the_seed_fixes_it() -> None:
    net, x = _net(), _images()

    def sg(seed: int) -> torch.Tensor:
        return smoothgrad.smooth_grad(
            net, x, [0, 1], samples=4, generator=torch.Generator().manual_seed(seed)
        )

    plain = smoothgrad.smooth_grad(net, x, [0, 1], samples=1, noise=0.0)
    assert not torch.allclose(sg(0), plain)
    torch.testing.assert_close(sg(0), sg(0), rtol=0, atol=0)
    assert not torch.allclose(sg(0), sg(1))


def test_saliency_is_channel_max_of_abs_over_the_99th_percentile() -> None:
    maps = np.zeros((2, 3, 10, 10))
    maps[0, 1] = -np.arange(100).reshape(10, 10)  # |.|: 0..99 in channel 1
    maps[0, 0, 0, 0] = 5.0  # channel 1 is 0 there: the max over channels is 5
    out, scale = smoothgrad.saliency(maps)
    want = np.percentile(np.abs(maps[0]).max(0), 99)
    assert scale[0] == pytest.approx(want) and scale[1] == 0
    assert out[0, 0, 0] == pytest.approx(5 / want) and out[0, 9, 9] == 1.0  # clipped at the top
    assert out.dtype == np.float32 and not out[1].any()  # an all-zero map stays zero


# --- the registry entry -----------------------------------------------------------------------------


def test_registered_off_by_default_with_its_own_params_and_document() -> None:
    kind = REGISTRY["smoothgrad"]
    assert kind.analysis() is smoothgrad and smoothgrad.Params is kind.params is SmoothGradSpec
    assert kind.doc is SmoothGradDoc and "smoothgrad" in names()
    a = AnalysesSpec()
    assert not kind.enabled(a) and (a.smoothgrad.samples, a.smoothgrad.noise) == (16, 0.15)
    with pytest.raises(ValueError, match="already registered"):
        register(Kind("smoothgrad", "other", SmoothGradSpec, SmoothGradDoc))
    with pytest.raises(ValueError, match="analyses.smoothgrad already belongs"):
        register(Kind("smoothgrad2", "smoothgrad", SmoothGradSpec, SmoothGradDoc))
    with pytest.raises(ValueError, match="KIND"):
        register(Kind("saliency", "saliency", SmoothGradSpec, GradCamDoc))


def test_run_and_save_write_the_document_and_its_maps(tmp_path: Path) -> None:
    net = _net(torch.float32)
    layers = (LayerInfo("fc", "4", "linear", (N_CLASSES,), N_CLASSES, 6, 2, 0.5),)
    lm = LoadedModel(net, "tiny", N_CLASSES, 6, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), layers, 0)
    probe = _images(torch.float32).repeat(3, 1, 1, 1)  # 6 images, labels 0, 1, 2, 0, 1, 2
    labels = np.array([0, 1, 2, 0, 1, 2])
    ctx = Context(
        loaded=lm,
        network="tiny",
        image=lambda i: probe[i],
        picture=lambda i: (probe[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8),
        class_names=("a", "b", "c"),
        labels=labels,
        shown={},
        weighted={},
        device=torch.device("cpu"),
        seed=0,
        problem=lambda loc, msg: f"{'.'.join(map(str, loc))}: {msg}",
    )
    empty = LayerTopK(*(np.zeros((N_CLASSES, 1), dt) for dt in (np.float32, np.int64, np.int32, np.int32)))
    mined = Mined({"fc": empty}, labels, np.zeros((6, 5), np.int64), np.zeros((6, 5), np.float32), None)
    result = smoothgrad.run(ctx, mined, SmoothGradSpec(enabled=True, images=3, samples=4))
    assert result.images == (0, 1, 2) and result.smooth.shape == (3, 3, 6, 8)
    doc = smoothgrad.save(ctx, result, tmp_path)
    assert doc.probe_images() == [0, 1, 2] and doc.samples == 4
    for e in doc.images:
        assert codecs.read_png(tmp_path / e.smooth_png).shape == (6, 8, 3)
        assert (tmp_path / e.plain_png).is_file() and e.smooth_scale > 0


# --- the network-page section -----------------------------------------------------------------------


def _with_smoothgrad(root: Path) -> Store:
    store = Store(make_fixture_store(root / "store", networks=("tiny-alex",)))
    ck = store.checkpoint_dir("tiny-alex", "epoch-2")
    rng = np.random.default_rng(0)
    entries = []
    for idx in (0, 3):
        for which in ("smooth", "plain"):
            store.write_png(ck / f"smoothgrad/{idx}-{which}.png", rng.integers(0, 255, (48, 48, 3), np.uint8))
        entries.append(
            SmoothGradImage(
                index=idx,
                label=idx % 2,
                predicted=0,
                smooth_png=f"smoothgrad/{idx}-smooth.png",
                plain_png=f"smoothgrad/{idx}-plain.png",
                smooth_scale=0.2,
                plain_scale=0.5,
            )
        )
    store.write_analysis("tiny-alex", "epoch-2", SmoothGradDoc(samples=16, noise=0.15, images=entries))
    m = store.read_manifest("tiny-alex", "epoch-2")
    store.write_manifest(m.model_copy(update={"techniques": [*m.techniques, "smoothgrad"]}))
    return store


def test_network_page_shows_the_section(tmp_path: Path) -> None:
    store = _with_smoothgrad(tmp_path)
    site = tmp_path / "site"
    render_site(store.root, site)
    text = (site / "tiny-alex/index.html").read_text(encoding="utf-8")
    assert '<section class="card" id="smoothgrad">' in text and 'href="#smoothgrad"' in text
    # registry order: after invariance, before stroke, whatever the manifest's order
    assert text.index('id="invariance"') < text.index('id="smoothgrad"') < text.index('id="stroke"')
    assert "16 copies" in text and "σ = 15%" in text
    for idx in (0, 3):
        for which in ("smooth", "plain"):
            assert f'src="smoothgrad/{idx}-{which}.png"' in text
            assert (site / f"tiny-alex/smoothgrad/{idx}-{which}.png").is_file()
    assert not check_site(site)
    assert 'id="smoothgrad"' not in (site / "tiny-alex/@epoch-1/index.html").read_text(encoding="utf-8")


def test_broken_document_is_one_render_error(tmp_path: Path) -> None:
    store = _with_smoothgrad(tmp_path)
    path = store.checkpoint_dir("tiny-alex", "epoch-2") / "smoothgrad.json"
    doc = codecs.read_json(path)
    doc["images"][0]["smooth_png"] = "../epoch-1/filters.png"
    codecs.write_json(path, doc)
    with pytest.raises(RenderError) as exc:
        render_site(store.root, tmp_path / "site")
    msg = str(exc.value)
    assert "smoothgrad.json" in msg and "leaves the checkpoint folder" in msg and "\n" not in msg
