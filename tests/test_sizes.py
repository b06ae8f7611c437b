"""The site-size summary a build prints, and its GitHub Pages warnings (issue 13)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sitegen.render import sizes
from sitegen.render.sizes import site_sizes, size_report


def _file(path: Path, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * n)


def test_sizes_per_network_and_layer(tmp_path: Path) -> None:
    _file(tmp_path / "index.html", 100)
    _file(tmp_path / "assets" / "app.js", 50)
    _file(tmp_path / "alexnet" / "index.html", 10)
    _file(tmp_path / "alexnet" / "fc6" / "unit-0001.html", 300)
    _file(tmp_path / "alexnet" / "fc6" / "unit-0001.webp", 700)
    _file(tmp_path / "alexnet" / "conv1" / "unit-0001.webp", 20)
    _file(tmp_path / "vgg" / "conv1_1" / "a" / "deep.png", 5)
    s = site_sizes(tmp_path, ["alexnet", "vgg"])
    assert (s.total, s.files) == (1185, 7)
    assert s.networks["alexnet"] == (1030, {"fc6": 1000, "conv1": 20})
    assert s.networks["vgg"] == (5, {"conv1_1": 5})
    assert s.largest == ("alexnet/fc6/unit-0001.webp", 700)
    lines, warnings = size_report(s, top=1)
    assert lines[1] == "  alexnet: 0.0 MB (largest: fc6 0.0 MB)"
    assert warnings == []


def test_over_the_pages_limit_says_what_to_turn_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _file(tmp_path / "net" / "fc7" / "u.webp", 900)
    _file(tmp_path / "net" / "conv1" / "u.webp", 200)
    monkeypatch.setattr(sizes, "PAGES_LIMIT", 1000)
    monkeypatch.setattr(sizes, "FILE_WARN", 800)
    lines, warnings = size_report(site_sizes(tmp_path, ["net"]))
    assert len(warnings) == 2
    assert "over GitHub Pages' 1 GB limit" in warnings[0] and "networks.net.units: {fc7: 256}" in warnings[0]
    assert warnings[1].startswith("net/fc7/u.webp is 0.0 MB")
