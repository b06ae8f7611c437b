"""Publish a rendered site to a ``gh-pages`` branch, as ``mkdocs gh-deploy`` does (issue 6 item 3).

The commit itself is made by ghp-import (``git fast-import`` straight into the branch, the work
tree is never touched). Around it this module does what ghp-import does not:

- checks every precondition first and ABORTS with a one-line :class:`~sitegen.errors.PublishError`
  naming the fix (mkdocs ``gh_deploy`` logs "not a git repository" and carries on);
- fetches the remote branch first, so a shallow or single-branch clone (CI) builds on top of the
  published history instead of pushing an unrelated root commit that the remote rejects;
- stamps the commit message with the sitegen version and the spec hash as git trailers, and
  refuses to overwrite a deploy made by a newer sitegen unless ``force`` (mkdocs ``_check_version``);
- gives the commit an identity when git has none (ghp-import would commit as ``" <>"``).

Example:
    >>> result = publish(Path("output/site"), repo_dir=Path("."), cname="atlas.example.org")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import ghp_import

from sitegen import __version__
from sitegen.errors import PublishError, StoreError
from sitegen.store import Store

__all__ = ["publish", "PublishResult", "Git", "stamp_message", "read_stamp"]

log = logging.getLogger("sitegen.publish")

VERSION_TRAILER = "Sitegen-Version"
SPEC_TRAILER = "Sitegen-Spec-Hash"
SOURCE_TRAILER = "Source-Commit"

# GitHub's documented limits: files over 50 MB get a warning, 100 MB are refused on push, a Pages
# site may be at most 1 GB. Warnings only: the remote need not be GitHub.
_FILE_WARN_BYTES = 50 * 1024**2
_SITE_WARN_BYTES = 1024**3

Runner = Callable[[list[str], Path], subprocess.CompletedProcess[str]]


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


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)


class Git:
    """The few read-only git queries :func:`publish` needs, run in ``repo_dir``.

    The commit and push themselves are ghp-import's; this adapter checks preconditions and reads
    state around it.

    Args:
        repo_dir: a folder inside the work repository.
        runner: runs ``["git", ...]`` in a folder and returns the completed process (text mode,
            output captured). The seam for tests; defaults to :func:`subprocess.run`.
    """

    def __init__(self, repo_dir: Path, *, runner: Runner = _run) -> None:
        self.repo_dir = Path(repo_dir)
        self.runner = runner

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            return self.runner(["git", *args], self.repo_dir)
        except FileNotFoundError:
            raise PublishError("git: not found on PATH; install git to publish") from None

    def _out(self, *args: str) -> str | None:
        """Stripped stdout of a git command, or None when it fails."""
        proc = self(*args)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def is_repo(self) -> bool:
        return self._out("rev-parse", "--git-dir") is not None

    def is_shallow(self) -> bool:
        return self._out("rev-parse", "--is-shallow-repository") == "true"

    def remotes(self) -> list[str]:
        return (self._out("remote") or "").split()

    def remote_url(self, remote: str) -> str | None:
        return self._out("remote", "get-url", remote)

    def config(self, key: str) -> str | None:
        return self._out("config", "--get", key) or None

    def current_branch(self) -> str | None:
        return self._out("symbolic-ref", "--quiet", "--short", "HEAD")

    def rev(self, ref: str) -> str | None:
        """The commit sha ``ref`` names, or None when it names none."""
        return self._out("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")

    def message(self, ref: str) -> str:
        return self._out("log", "-1", "--format=%B", ref, "--") or ""

    def valid_branch_name(self, name: str) -> bool:
        return self._out("check-ref-format", "--branch", name) is not None

    def remote_has_branch(self, remote: str, branch: str) -> bool:
        """Whether ``remote`` has ``branch``; raises PublishError when the remote cannot be read."""
        proc = self("ls-remote", "--exit-code", "--heads", remote, f"refs/heads/{branch}")
        if proc.returncode in (0, 2):  # 2: reachable, no such ref (git ls-remote --exit-code)
            return proc.returncode == 0
        raise PublishError(
            f"git remote {remote!r} ({self.remote_url(remote)}) cannot be read: {_last_line(proc.stderr)}; "
            "check the URL and your access, then rerun"
        )

    def fetch_branch(self, remote: str, branch: str, *, depth: int | None = None) -> None:
        """Update ``refs/remotes/<remote>/<branch>``, the ref ghp-import builds on.

        The explicit refspec matters: in a single-branch clone (``actions/checkout``) a plain
        ``git fetch origin gh-pages`` only writes FETCH_HEAD.
        """
        args = ["fetch", "--quiet", "--no-tags"]
        if depth is not None:
            args.append(f"--depth={depth}")
        proc = self(*args, remote, f"+refs/heads/{branch}:refs/remotes/{remote}/{branch}")
        if proc.returncode != 0:
            why = _last_line(proc.stderr)
            raise PublishError(f"git fetch {remote} {branch} failed: {why}; check your access, then rerun")


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
    try:
        with _in_repo(repo_dir, _identity_env(git)):
            ghp_import.ghp_import(
                str(site_dir), mesg=full_message, remote=remote, branch=branch, push=push,
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

    commit = git.rev(f"refs/heads/{branch}")
    if commit is None or commit in not_written:
        raise PublishError(f"{repo_dir}: git fast-import did not write branch {branch!r} (see git's message)")
    log.info("published %d files (%.1f MB) to %s %s at %s%s", files, size / 1e6, remote, branch, commit[:7],
             "" if push else " (not pushed)")
    return PublishResult(
        commit=commit, branch=branch, remote=remote, pushed=push, message=full_message, files=files,
        size=size, spec_hash=spec_hash, sitegen_version=__version__, previous_version=previous_version,
    )


# --- preconditions ---------------------------------------------------------------------------------
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


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else "unknown git error"
    return last.removeprefix("fatal: ").removeprefix("error: ")
