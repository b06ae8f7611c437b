"""The publish steps in order: preconditions, stamp, commit with ghp-import, push, and the result."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import ghp_import

from sitegen import __version__
from sitegen.errors import PublishError
from sitegen.publish._checks import _check_cname, _check_repo, _check_site, _check_version, _sync_branch
from sitegen.publish.git import Git
from sitegen.publish.stamp import stamp_message

log = logging.getLogger("sitegen.publish")

# GitHub's documented limits: files over 50 MB get a warning, 100 MB are refused on push, a Pages
# site may be at most 1 GB. Warnings only: the remote need not be GitHub.
_FILE_WARN_BYTES = 50 * 1024**2
_SITE_WARN_BYTES = 1024**3


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What :func:`publish` did.

    Attributes:
        commit: sha of the new commit on ``branch``.
        branch: the branch written (``gh-pages``).
        remote: the remote pushed to (or that would have been, when ``pushed`` is False).
        pushed: whether the branch was pushed.
        message: the full commit message, trailers included.
        files: number of files published from the site folder (``.nojekyll``/``CNAME`` not counted).
        size: their total size in bytes.
        spec_hash: the spec hash stamped into the message.
        sitegen_version: the sitegen version stamped into the message.
        previous_version: the sitegen version of the deploy this one replaced, or None when the
            branch was new or its last commit carries no sitegen stamp.
    """

    commit: str
    branch: str
    remote: str
    pushed: bool
    message: str
    files: int
    size: int
    spec_hash: str
    sitegen_version: str
    previous_version: str | None


def publish(
    site_dir: Path,
    *,
    repo_dir: Path,
    remote: str = "origin",
    branch: str = "gh-pages",
    cname: str | None = None,
    message: str | None = None,
    push: bool = True,
    force: bool = False,
    store_dir: Path | None = None,
    git: Git | None = None,
) -> PublishResult:
    """Commit ``site_dir`` to ``branch`` of the repository at ``repo_dir`` and push it to ``remote``.

    Every precondition is checked before anything is written; a failed one raises PublishError and
    leaves the repository as it was.

    Args:
        site_dir: the rendered site (``output/site``): must hold ``index.html``.
        repo_dir: a folder inside the git work repository to publish from.
        remote: the remote to push to; it must exist even with ``push=False`` (its branch is the
            previous deploy that the version check reads).
        branch: the branch to replace with the site (history is kept: one commit per publish).
        cname: a custom domain, written as ``CNAME`` at the root of the branch.
        message: the commit subject; trailers with the sitegen version and spec hash are appended.
        push: push the branch; False only commits it locally.
        force: publish even over a deploy stamped by a newer sitegen version.
        store_dir: the store the site was rendered from (default: ``site_dir``'s sibling ``store``);
            its ``build.json`` gives the spec hash.
        git: the git adapter to query with (default: ``Git(repo_dir)``).

    Returns:
        What was published (:class:`PublishResult`).

    Raises:
        PublishError: missing or incomplete site/build, not a git repository, unknown or unreachable
            remote, the branch checked out, a newer sitegen's deploy without ``force``, or a failed
            commit or push.

    Example:
        >>> publish(Path("output/site"), repo_dir=Path("."), push=False).pushed  # doctest: +SKIP
        False
    """
    # Resolve first: ghp-import runs git in the current directory, so we chdir into repo_dir below.
    site_dir = Path(site_dir).resolve()
    repo_dir = Path(repo_dir).resolve()
    store_dir = Path(store_dir).resolve() if store_dir is not None else site_dir.parent / "store"
    git = git or Git(repo_dir)

    spec_hash = _check_site(site_dir, store_dir)
    cname = _check_cname(cname)
    _check_repo(git, repo_dir, remote, branch)
    previous_ref = _sync_branch(git, remote, branch, push=push)
    previous_version = _check_version(git, previous_ref, branch, force=force)

    full_message = stamp_message(message, spec_hash, source_commit=git.rev("HEAD"))
    files, size = _measure(site_dir)
    # ghp-import first resets the local branch to the remote one, then commits on top: the commit
    # was written iff the branch ends up at neither of those.
    not_written = {git.rev(f"refs/heads/{branch}"), git.rev(previous_ref) if previous_ref else None}
    _commit(git, site_dir, repo_dir, message=full_message, remote=remote, branch=branch, push=push,
            cname=cname, not_written=not_written)

    commit = git.rev(f"refs/heads/{branch}")
    if commit is None or commit in not_written:
        raise PublishError(f"{repo_dir}: git fast-import did not write branch {branch!r} (see git's message)")
    log.info("published %d files (%.1f MB) to %s %s at %s%s", files, size / 1e6, remote, branch, commit[:7],
             "" if push else " (not pushed)")
    return PublishResult(
        commit=commit, branch=branch, remote=remote, pushed=push, message=full_message, files=files,
        size=size, spec_hash=spec_hash, sitegen_version=__version__, previous_version=previous_version,
    )


def _commit(
    git: Git, site_dir: Path, repo_dir: Path, *, message: str, remote: str, branch: str, push: bool,
    cname: str | None, not_written: set[str | None],
) -> None:
    """Commit (and push) ``site_dir`` with ghp-import, its failures turned into PublishError."""
    try:
        with _in_repo(repo_dir, _identity_env(git)):
            ghp_import.ghp_import(
                str(site_dir), mesg=message, remote=remote, branch=branch, push=push,
                nojekyll=True, cname=cname, force=False, no_history=False, followlinks=False,
            )
    except ghp_import.GhpError as e:
        raise PublishError(f"{repo_dir}: ghp-import failed: {e.message}") from None
    except subprocess.CalledProcessError as e:
        # git printed its own reason above (ghp-import does not capture push output).
        raise PublishError(
            f"git push {remote} {branch} failed (exit {e.returncode}); the commit is on the local branch "
            f"{branch!r}: fix access to {remote!r} and rerun, or push it with `git push {remote} {branch}`"
        ) from None
    except TypeError as e:
        # ghp-import 2.1 reports a failed `git fast-import` with sys.stdout.write(bytes), a TypeError
        # on Python 3; only treat it as such when the branch really did not move.
        if git.rev(f"refs/heads/{branch}") not in not_written:
            raise
        raise PublishError(f"{repo_dir}: git fast-import could not write branch {branch!r} (see git's "
                           "message above); check that the repository is writable") from e


# --- helpers ---------------------------------------------------------------------------------------
def _measure(site_dir: Path) -> tuple[int, int]:
    """Count and size the files ghp-import will commit; warn about GitHub's size limits."""
    files = size = 0
    for root, _, names in os.walk(site_dir):  # followlinks=False, as ghp-import walks it
        for name in names:
            path = Path(root, name)
            n = path.stat().st_size
            files += 1
            size += n
            if n >= _FILE_WARN_BYTES:
                log.warning("%s: %.0f MB; GitHub warns from 50 MB and refuses files of 100 MB or more",
                            path, n / 1024**2)
    if size > _SITE_WARN_BYTES:
        log.warning("%s: %.2f GB; GitHub Pages sites are limited to 1 GB", site_dir, size / 1024**3)
    return files, size


def _identity_env(git: Git) -> dict[str, str]:
    """Committer defaults for a git with no identity (a fresh CI runner); ghp-import reads them from env."""
    env: dict[str, str] = {}
    if "GIT_COMMITTER_NAME" not in os.environ and not git.config("user.name"):
        env["GIT_COMMITTER_NAME"] = "sitegen"
    if "GIT_COMMITTER_EMAIL" not in os.environ and not git.config("user.email"):
        env["GIT_COMMITTER_EMAIL"] = "sitegen@localhost"
    return env


@contextmanager
def _in_repo(repo_dir: Path, env: Mapping[str, str]) -> Iterator[None]:
    """chdir into ``repo_dir`` with ``env`` added, both restored after.

    ghp-import has no cwd or env parameter: its git subprocesses inherit the process's.
    """
    old_cwd = os.getcwd()
    saved = {k: os.environ.get(k) for k in env}
    os.chdir(repo_dir)
    os.environ.update(env)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
