"""What every analysis document shares: the ``FORMAT`` number, the base class and checked file paths."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict

__all__ = ["FORMAT", "AnalysisDoc", "RelPath"]


#: Format of every analysis document (bumped when a reader could misread an older one).
FORMAT: Literal[1] = 1


def _inside(rel: str) -> str:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts:
        raise ValueError(f"file {rel!r} leaves the checkpoint folder")
    return rel


#: A file of the checkpoint folder, relative to it.
RelPath = Annotated[str, AfterValidator(_inside)]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AnalysisDoc(_Part):
    """Base of every analysis document: its ``format`` and what it references."""

    KIND: ClassVar[str] = ""
    format: Literal[1] = FORMAT

    def probe_images(self) -> list[int]:
        """Probe images the document's pages show (the build writes them under ``datasets/``)."""
        return []
