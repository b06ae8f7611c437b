"""The root of the tree: :class:`Spec`, its ``diffs:`` and ``publish:`` sections, and its JSON Schema."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr

from sitegen.spec._base import _Model
from sitegen.spec.analyses import AnalysesSpec
from sitegen.spec.inputs import DatasetSpec, NetworkSpec
from sitegen.spec.source import SpecSource, _dotted


class DiffSpec(_Model):
    """Compare two checkpoints: 'NETWORK@CHECKPOINT' refs."""

    a: str = Field(description="Older side, e.g. 'alexnet@epoch-1'.")
    b: str = Field(description="Newer side, e.g. 'alexnet@epoch-4'.")


class PublishSpec(_Model):
    """Where `sitegen publish` pushes the site (GitHub Pages via ghp-import)."""

    remote: str = Field("origin", description="Git remote to push to.")
    branch: str = Field("gh-pages", description="Branch that holds the site.")
    cname: str | None = Field(None, description="Custom domain written to CNAME.")
    message: str | None = Field(None, description="Commit message (version and spec hash are appended).")


class Spec(_Model):
    """A sitegen experiment: datasets, networks, analyses, diffs and publishing."""

    title: str = Field("sitegen atlas", description="Title shown on every page.")
    output: Path = Field(
        Path("output"), description="Output folder (store/ and site/), relative to the spec file."
    )
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$",
        description="'auto' (cuda, then mps, then cpu), or a device.",
    )
    seed: int = Field(0, description="Seed for splits, doodles, unit sampling and training.")
    datasets: dict[str, DatasetSpec] = Field(min_length=1, description="Datasets by name.")
    networks: dict[str, NetworkSpec] = Field(min_length=1, description="Networks by name.")
    analyses: AnalysesSpec = Field(default_factory=AnalysesSpec, description="Analysis options.")
    diffs: list[DiffSpec] = Field(default_factory=list, description="Checkpoint comparisons to build.")
    publish: PublishSpec = Field(default_factory=PublishSpec, description="GitHub Pages publishing.")

    _source: SpecSource | None = PrivateAttr(None)

    @property
    def source(self) -> SpecSource:
        """Where the spec came from (file, text, node lines)."""
        if self._source is None:
            return SpecSource(Path("<spec>"), "", {})
        return self._source

    def where(self, loc: Iterable[str | int]) -> str:
        """``file:line`` of the deepest YAML node on ``loc`` (e.g. ``("networks", "alexnet", "arch")``)."""
        return self.source.where(tuple(loc))

    def problem(self, loc: Iterable[str | int], message: str) -> str:
        """Format one problem as ``file:line: dotted.key: message``."""
        loc = tuple(loc)
        return f"{self.where(loc)}: {_dotted(loc)}: {message}"

    def section_hash(self, *loc: str | int) -> str:
        """Content hash of one section (e.g. ``section_hash("networks", "alexnet")``) for cache keys."""
        node: Any = self.model_dump(mode="json")
        for part in loc:
            node = node[part]
        return hashlib.sha256(json.dumps(node, sort_keys=True).encode()).hexdigest()[:16]

    def spec_hash(self) -> str:
        """Content hash of the whole validated spec."""
        return self.section_hash()


def json_schema() -> dict:
    """The JSON Schema of the spec (``sitegen schema``)."""
    return Spec.model_json_schema()
