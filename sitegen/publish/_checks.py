"""The preconditions of a publish, each checked before anything is written; a failed one ABORTS."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from sitegen import __version__
from sitegen.errors import PublishError, StoreError
from sitegen.publish.git import Git
from sitegen.publish.stamp import VERSION_TRAILER, read_stamp
from sitegen.store import Store

log = logging.getLogger("sitegen.publish")


def _check_site(site_dir: Path, store_dir: Path) -> str:
    """The spec hash of a complete build, or PublishError naming what is missing."""
    if not site_dir.is_dir():
        raise PublishError(f"{site_dir}: no site folder here; run `sitegen build` (or `render`) first")
    if not (site_dir / "index.html").is_file():
        raise PublishError(f"{site_dir}: incomplete site (no index.html); rerun `sitegen render` first")
    if not (store_dir / "build.json").is_file():
        raise PublishError(
            f"{store_dir / 'build.json'}: missing, so the site cannot be stamped with its spec; "
            "run `sitegen build` first (or pass the store the site was rendered from)"
        )
    try:
        return Store(store_dir).read_build().spec_hash
    except StoreError as e:
        raise PublishError(f"cannot read the build record: {e}") from None


def _check_cname(cname: str | None) -> str | None:
    if cname is None:
        return None
    host = cname.strip()
    # GitHub wants a bare host name in CNAME; a URL or several words there silently breaks the domain.
    if not host or re.search(r"[\s/:]", host):
        raise PublishError(f"--cname {cname!r}: not a host name; pass a bare domain like atlas.example.org")
    return host


def _check_repo(git: Git, repo_dir: Path, remote: str, branch: str) -> None:
    if not repo_dir.is_dir():
        raise PublishError(f"{repo_dir}: no such folder; run publish from your project's git repository")
    if not git.is_repo():
        raise PublishError(
            f"{repo_dir}: not a git repository; run `git init` and `git remote add {remote} URL` there, "
            "or publish from your project's clone"
        )
    if not git.valid_branch_name(branch):
        raise PublishError(f"--branch {branch!r}: not a valid git branch name; use e.g. gh-pages")
    if git.remote_url(remote) is None:
        known = ", ".join(git.remotes()) or "none"
        raise PublishError(
            f"{repo_dir}: no git remote {remote!r} (remotes: {known}); "
            f"add it with `git remote add {remote} URL` or pass --remote"
        )
    if git.current_branch() == branch:
        # ghp-import rewrites the branch ref under the work tree, which would then show the whole
        # site as deleted/modified.
        raise PublishError(f"{repo_dir}: branch {branch!r} is checked out; switch to your source branch")


def _sync_branch(git: Git, remote: str, branch: str, *, push: bool) -> str | None:
    """Fetch ``remote``'s ``branch`` when it has one; return the ref ghp-import will build on.

    ghp-import never fetches: it builds on ``refs/remotes/<remote>/<branch>`` when that exists, else
    on the local branch. In a shallow clone the remote-tracking ref is missing, so without this the
    new commit would have no parent and the push would be rejected.
    """
    try:
        if git.remote_has_branch(remote, branch):
            git.fetch_branch(remote, branch, depth=1 if git.is_shallow() else None)
    except PublishError as e:
        if push:
            raise
        # Committing locally needs no network: go on with what the clone already knows.
        log.warning("%s; committing on top of the local refs", e)
    for ref in (f"refs/remotes/{remote}/{branch}", f"refs/heads/{branch}"):
        if git.rev(ref) is not None:
            return ref
    return None


def _check_version(git: Git, ref: str | None, branch: str, *, force: bool) -> str | None:
    """Refuse to replace a deploy stamped by a newer sitegen (mkdocs ``_check_version``)."""
    if ref is None:
        return None
    previous = read_stamp(git.message(ref)).get(VERSION_TRAILER)
    if previous is None:
        return None
    prev_release, ours = _release(previous), _release(__version__)
    if force:
        if prev_release is None or (ours is not None and _newer(prev_release, ours)):
            log.warning("replacing a deploy made by sitegen %s with sitegen %s (--force)",
                        previous, __version__)
        return previous
    if prev_release is None:
        raise PublishError(f"{branch!r} was deployed by sitegen {previous!r}, a version this sitegen cannot "
                           "compare; pass --force to overwrite it")
    if ours is not None and _newer(prev_release, ours):
        raise PublishError(
            f"{branch!r} was deployed by sitegen {previous}, newer than this sitegen {__version__}; "
            "upgrade sitegen, or pass --force to overwrite it"
        )
    return previous


def _release(version: str) -> tuple[int, ...] | None:
    """The numeric release part of a version (``"0.10.2rc1"`` → ``(0, 10, 2)``); None if it has none.

    Compared as tuples, never as strings ("0.10" < "0.9" as strings). Pre-release tags are ignored:
    the check only has to catch a clearly newer release.
    """
    m = re.match(r"v?(\d+(?:\.\d+)*)", version.strip())
    return tuple(int(p) for p in m.group(1).split(".")) if m else None


def _newer(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)) > b + (0,) * (width - len(b))
