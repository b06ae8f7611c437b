"""The git adapter: the few read-only queries publishing needs, behind one runner seam for tests."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from sitegen.errors import PublishError

Runner = Callable[[list[str], Path], subprocess.CompletedProcess[str]]


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


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else "unknown git error"
    return last.removeprefix("fatal: ").removeprefix("error: ")
