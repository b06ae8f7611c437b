"""The stamp of a deploy: git trailers naming the sitegen version, spec hash and source commit."""

from __future__ import annotations

import re

from sitegen import __version__

VERSION_TRAILER = "Sitegen-Version"
SPEC_TRAILER = "Sitegen-Spec-Hash"
SOURCE_TRAILER = "Source-Commit"


def stamp_message(message: str | None, spec_hash: str, *, version: str = __version__,
                  source_commit: str | None = None) -> str:
    """The gh-pages commit message: a subject, then trailers naming the sitegen version and spec.

    Args:
        message: the subject (``--message``); a default naming the spec hash when None or blank.
        spec_hash: the hash of the spec the site was built from (``store/build.json``).
        version: the sitegen version that publishes.
        source_commit: the sha of the source repository's HEAD, when it has one.

    Returns:
        The message; :func:`read_stamp` reads the version and spec hash back from it.

    Example:
        >>> print(stamp_message(None, "0123456789abcdef", version="0.1.0"))
        Publish sitegen atlas (spec 0123456789ab)
        <BLANKLINE>
        Sitegen-Version: 0.1.0
        Sitegen-Spec-Hash: 0123456789abcdef
    """
    subject = (message or "").strip() or f"Publish sitegen atlas (spec {spec_hash[:12]})"
    trailers = [f"{VERSION_TRAILER}: {version}", f"{SPEC_TRAILER}: {spec_hash}"]
    if source_commit:
        trailers.append(f"{SOURCE_TRAILER}: {source_commit}")
    return subject + "\n\n" + "\n".join(trailers)


def read_stamp(message: str) -> dict[str, str]:
    """The sitegen trailers of a commit message (``{"Sitegen-Version": ..., ...}``); {} when unstamped.

    The last occurrence wins, so a user subject that happens to contain ``Sitegen-Version:`` cannot
    mask the real trailer below it.
    """
    found: dict[str, str] = {}
    for key in (VERSION_TRAILER, SPEC_TRAILER, SOURCE_TRAILER):
        values = re.findall(rf"^{re.escape(key)}:[ \t]*(\S+)[ \t]*$", message, flags=re.MULTILINE)
        if values:
            found[key] = values[-1]
    return found
