"""The base of every spec model: frozen, unknown keys forbidden (STYLE.md 6)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
