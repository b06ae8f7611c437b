"""Errors a user can cause, one class per stage.

Only ``sitegen.cli`` turns these into a message and exit code 2; anything that
is not a :class:`SitegenError` is a bug and keeps its traceback.
"""

from __future__ import annotations


class SitegenError(Exception):
    """Base of every error caused by input (spec, files, environment), not by a bug."""


class SpecError(SitegenError):
    """Raised by ``sitegen.spec`` when the YAML spec is missing, malformed or invalid.

    Carries every problem found, each already formatted as ``file:line: key: message``.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class DataError(SitegenError):
    """Raised by ``sitegen.data`` for missing/empty dataset folders or classes without readable images."""


class ModelError(SitegenError):
    """Raised by ``sitegen.models``: unknown architectures, missing or mismatched checkpoints, bad layers."""


class StoreError(SitegenError):
    """Raised by ``sitegen.store`` for unreadable, foreign or too-new artifact stores."""


class RenderError(SitegenError):
    """Raised by ``sitegen.render`` when a store lacks what a page needs (e.g. render before build)."""


class DiffError(SitegenError):
    """Raised by ``sitegen.diff`` when two atlases cannot be compared (different probe sets or layers)."""


class PublishError(SitegenError):
    """Raised by ``sitegen.publish`` when a precondition fails (no build, not a git repo, no remote)."""


class ServeError(SitegenError):
    """Raised by ``sitegen.serve`` for a missing site, a bad ``--base`` or a port in use."""


class DeviceError(SitegenError):
    """Raised when the spec asks for a device this machine does not have."""
