"""Publishing to gh-pages, against local bare repositories only (no network).

Every test runs git with an empty global config (no identity, no user settings) so results do not
depend on the machine; fixture sites are a few hand-written files plus a BuildRecord written with
the Store API.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from sitegen import __version__
from sitegen.errors import PublishError
from sitegen.publish import Git, PublishResult, publish, read_stamp, stamp_message
from sitegen.store import Store
from sitegen.store.manifest import BuildRecord

SPEC_HASH = "5eed0123456789abcdef0123456789abcdef0123"
INDEX = b"<!doctype html><title>atlas</title><a href='nets/a.html'>a</a>\n"
PAGE = b"<!doctype html><title>net a</title>\n"


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def commit_on_branch(cwd: Path, branch: str, message: str) -> None:
    """Make ``branch`` (orphan) in ``cwd`` hold one file, committed with ``message``, and push it."""
    git(cwd, "checkout", "-q", "--orphan", branch)
    git(cwd, "rm", "-rfq", "--ignore-unmatch", ".")
    (cwd / "old.html").write_text("old deploy")
    git(cwd, "add", "old.html")
    git(cwd, "-c", "user.name=Other", "-c", "user.email=o@x", "commit", "-qm", message)
    git(cwd, "push", "-q", "origin", branch)
    git(cwd, "checkout", "-q", "main")


@pytest.fixture(autouse=True)
def isolated_git(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / "gitconfig"))  # absent file: no identity
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    # "Not a git repository" must not depend on where the temp folder lives.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path_factory.getbasetemp()))
    for key in ("GIT_DIR", "GIT_WORK_TREE", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL",
                "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """``out/site`` with two pages, beside ``out/store`` holding a finished build record."""
    site = tmp_path / "out" / "site"
    (site / "nets").mkdir(parents=True)
    (site / "index.html").write_bytes(INDEX)
    (site / "nets" / "a.html").write_bytes(PAGE)
    Store(tmp_path / "out" / "store").write_build(BuildRecord(
        title="fixture", spec_hash=SPEC_HASH, created="2024-01-01T00:00:00Z", sitegen_version=__version__,
        torch_version="none", device="cpu", datasets=["d"], networks=["a"],
    ))
    return site


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    path = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(path))
    return path


@pytest.fixture
def work(tmp_path: Path, bare: Path) -> Path:
    """A work repository on ``main`` with one commit, whose ``origin`` is ``bare``."""
    path = tmp_path / "work"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("project\n")
    git(path, "add", "README.md")
    git(path, "-c", "user.name=Dev", "-c", "user.email=dev@x", "commit", "-qm", "source")
    git(path, "remote", "add", "origin", str(bare))
    git(path, "push", "-q", "origin", "main")
    return path


def files_on(repo: Path, ref: str) -> set[str]:
    return set(git(repo, "ls-tree", "-r", "--name-only", ref).splitlines())


def test_publish_pushes_site_nojekyll_cname_and_stamp(site: Path, work: Path, bare: Path) -> None:
    cwd = os.getcwd()
    result = publish(site, repo_dir=work, cname="atlas.example.org")

    assert isinstance(result, PublishResult) and result.pushed
    assert files_on(bare, "gh-pages") == {"index.html", "nets/a.html", ".nojekyll", "CNAME"}
    assert subprocess.run(["git", "show", "gh-pages:index.html"], cwd=bare, capture_output=True,
                          check=True).stdout == INDEX
    assert git(bare, "show", "gh-pages:CNAME") == "atlas.example.org"
    assert git(bare, "show", "gh-pages:.nojekyll") == ""
    source = git(work, "rev-parse", "HEAD")
    message = git(bare, "log", "-1", "--format=%B", "gh-pages")
    assert message == (
        f"Publish sitegen atlas (spec {SPEC_HASH[:12]})\n\n"
        f"Sitegen-Version: {__version__}\nSitegen-Spec-Hash: {SPEC_HASH}\nSource-Commit: {source}"
    )
    assert result.message == message
    assert result.commit == git(bare, "rev-parse", "gh-pages")
    assert (result.files, result.size) == (2, len(INDEX) + len(PAGE))
    assert (result.spec_hash, result.sitegen_version) == (SPEC_HASH, __version__)
    assert result.previous_version is None
    # No identity configured: a named default instead of ghp-import's " <>", and no leak afterwards.
    assert git(bare, "log", "-1", "--format=%cn <%ce>", "gh-pages") == "sitegen <sitegen@localhost>"
    assert "GIT_COMMITTER_NAME" not in os.environ and os.getcwd() == cwd
    # The work tree and its branch are untouched.
    assert git(work, "status", "--porcelain") == "" and git(work, "symbolic-ref", "--short", "HEAD") == "main"


def test_second_publish_builds_on_history_and_replaces_files(site: Path, work: Path, bare: Path) -> None:
    first = publish(site, repo_dir=work)
    (site / "nets" / "a.html").unlink()
    (site / "b.html").write_text("b")
    second = publish(site, repo_dir=work, message="Lab meeting 3")

    assert git(bare, "rev-parse", "gh-pages^") == first.commit
    assert files_on(bare, "gh-pages") == {"index.html", "b.html", ".nojekyll"}
    assert git(bare, "log", "-1", "--format=%s", "gh-pages") == "Lab meeting 3"
    assert read_stamp(second.message)["Sitegen-Spec-Hash"] == SPEC_HASH
    assert second.previous_version == __version__


def test_identity_from_git_config_is_kept(site: Path, work: Path, bare: Path) -> None:
    git(work, "config", "user.name", "Ada")
    git(work, "config", "user.email", "ada@lab")
    publish(site, repo_dir=work)
    assert git(bare, "log", "-1", "--format=%cn <%ce>", "gh-pages") == "Ada <ada@lab>"


def test_no_push_commits_locally_only(site: Path, work: Path, bare: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # Relative paths: publish must resolve them before it changes into the repository.
    monkeypatch.chdir(tmp_path)
    result = publish(Path("out/site"), repo_dir=Path("work"), push=False)

    assert not result.pushed
    assert git(bare, "branch", "--list", "gh-pages") == ""
    assert git(work, "rev-parse", "gh-pages") == result.commit
    assert files_on(work, "gh-pages") == {"index.html", "nets/a.html", ".nojekyll"}
    assert read_stamp(git(work, "log", "-1", "--format=%B", "gh-pages")) == {
        "Sitegen-Version": __version__, "Sitegen-Spec-Hash": SPEC_HASH,
        "Source-Commit": git(work, "rev-parse", "HEAD"),
    }
    assert Path.cwd() == tmp_path


def test_shallow_clone_fetches_the_published_branch_first(site: Path, work: Path, bare: Path,
                                                          tmp_path: Path) -> None:
    first = publish(site, repo_dir=work)
    # What actions/checkout gives: depth 1, the default branch only (no origin/gh-pages ref).
    shallow = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", bare.as_uri(), str(shallow))
    assert git(shallow, "rev-parse", "--is-shallow-repository") == "true"
    assert git(shallow, "branch", "-r", "--list", "origin/gh-pages") == ""

    second = publish(site, repo_dir=shallow)

    assert second.pushed and git(bare, "rev-parse", "gh-pages") == second.commit
    assert git(bare, "rev-parse", "gh-pages^") == first.commit


def test_refuses_to_overwrite_a_newer_sitegen_deploy(site: Path, work: Path, bare: Path) -> None:
    commit_on_branch(work, "gh-pages", "Publish\n\nSitegen-Version: 99.0.0\nSitegen-Spec-Hash: other")
    before = git(bare, "rev-parse", "gh-pages")

    with pytest.raises(PublishError, match=r"sitegen 99\.0\.0, newer than this sitegen .*--force") as e:
        publish(site, repo_dir=work)
    assert "\n" not in str(e.value)
    assert git(bare, "rev-parse", "gh-pages") == before

    result = publish(site, repo_dir=work, force=True)
    assert result.previous_version == "99.0.0"
    assert git(bare, "rev-parse", "gh-pages^") == before


def test_versions_compare_as_numbers_not_strings(site: Path, work: Path, bare: Path) -> None:
    # "0.0.10" < "0.1.0" numerically although it sorts after it as a string; an older deploy is replaced.
    commit_on_branch(work, "gh-pages", "old\n\nSitegen-Version: 0.0.10\nSitegen-Spec-Hash: x")
    assert publish(site, repo_dir=work).previous_version == "0.0.10"


def test_unstamped_previous_deploy_is_replaced(site: Path, work: Path, bare: Path) -> None:
    commit_on_branch(work, "gh-pages", "made by hand")
    result = publish(site, repo_dir=work)
    assert result.previous_version is None
    assert "old.html" not in files_on(bare, "gh-pages")


@pytest.mark.parametrize(
    ("case", "pattern"),
    [
        ("missing site", r"no site folder here; run `sitegen build`"),
        ("no index.html", r"incomplete site \(no index\.html\); rerun `sitegen render`"),
        ("no build.json", r"build\.json: missing.*run `sitegen build` first"),
        ("not a git repo", r"not a git repository; run `git init`"),
        ("unknown remote", r"no git remote 'upstream' \(remotes: origin\); add it with `git remote add up"),
        ("branch checked out", r"branch 'gh-pages' is checked out; switch to your source branch"),
        ("bad cname", r"--cname 'https://atlas\.example\.org': not a host name"),
        ("bad branch", r"--branch 'gh pages': not a valid git branch name"),
    ],
)
def test_refusals_are_one_line_and_change_nothing(case: str, pattern: str, site: Path, work: Path, bare: Path,
                                                  tmp_path: Path) -> None:
    kwargs: dict[str, object] = {}
    site_dir, repo_dir = site, work
    if case == "missing site":
        site_dir = tmp_path / "nowhere" / "site"
    elif case == "no index.html":
        (site / "index.html").unlink()
    elif case == "no build.json":
        (tmp_path / "out" / "store" / "build.json").unlink()
    elif case == "not a git repo":
        repo_dir = tmp_path / "plain"
        repo_dir.mkdir()
    elif case == "unknown remote":
        kwargs["remote"] = "upstream"
    elif case == "branch checked out":
        git(work, "checkout", "-q", "-b", "gh-pages")
    elif case == "bad cname":
        kwargs["cname"] = "https://atlas.example.org"
    elif case == "bad branch":
        kwargs["branch"] = "gh pages"

    with pytest.raises(PublishError, match=pattern) as e:
        publish(site_dir, repo_dir=repo_dir, **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(e.value)
    assert git(bare, "for-each-ref", "--format=%(refname)") == "refs/heads/main"
    # No gh-pages commit was made (in the checked-out case the branch is just main's commit).
    assert git(work, "for-each-ref", "--format=%(objectname)", "refs/heads/gh-pages") in (
        "", git(work, "rev-parse", "main"))


def test_foreign_build_record_is_a_publish_error(site: Path, work: Path, tmp_path: Path) -> None:
    (tmp_path / "out" / "store" / "build.json").write_text('{"format": 99}')
    with pytest.raises(PublishError, match=r"cannot read the build record: .*format 99.*upgrade sitegen"):
        publish(site, repo_dir=work)


def test_unreachable_remote_through_the_git_seam(site: Path, work: Path) -> None:
    calls: list[list[str]] = []

    def runner(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        if args[1] == "ls-remote":
            return subprocess.CompletedProcess(args, 128, "", "fatal: unable to access 'https://x/': boom\n")
        return subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)

    with pytest.raises(PublishError, match=r"git remote 'origin' \(.*\) cannot be read: unable to access"):
        publish(site, repo_dir=work, git=Git(work, runner=runner))
    assert ["git", "ls-remote", "--exit-code", "--heads", "origin", "refs/heads/gh-pages"] in calls

    # Without push the network is optional: commit on what the clone knows, with a warning.
    result = publish(site, repo_dir=work, push=False, git=Git(work, runner=runner))
    assert not result.pushed and git(work, "rev-parse", "gh-pages") == result.commit


def test_git_missing_is_a_publish_error(site: Path, work: Path) -> None:
    def runner(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError(args[0])

    with pytest.raises(PublishError, match=r"git: not found on PATH; install git"):
        publish(site, repo_dir=work, git=Git(work, runner=runner))


def test_stamp_round_trip_last_trailer_wins() -> None:
    message = stamp_message("Sitegen-Version: 999", "abc", version="1.2.3", source_commit="f00")
    assert message.splitlines()[0] == "Sitegen-Version: 999"
    stamp = {"Sitegen-Version": "1.2.3", "Sitegen-Spec-Hash": "abc", "Source-Commit": "f00"}
    assert read_stamp(message) == stamp
    assert read_stamp("Update documentation") == {}


def test_cli_publish_and_its_refusal(
    site: Path, work: Path, bare: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from sitegen.cli import app

    monkeypatch.chdir(work)
    result = CliRunner().invoke(app, ["publish", str(site), "--cname", "atlas.example.org"])
    assert result.exit_code == 0, result.output
    assert "published" in result.output and "origin/gh-pages" in result.output
    assert {"index.html", ".nojekyll", "CNAME"} <= files_on(bare, "gh-pages")
    bad = CliRunner().invoke(app, ["publish", str(site), "--remote", "upstream"])
    assert bad.exit_code == 2
    assert "upstream" in bad.output and "Traceback" not in bad.output


def test_cli_publish_reads_the_spec_publish_section(
    site: Path, work: Path, bare: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`publish:` in the spec gives branch, CNAME and the site folder (its output:); flags override."""
    from typer.testing import CliRunner

    from sitegen.cli import app

    spec = work / "experiments.yaml"
    spec.write_text(
        f"output: {site.parent}\n"
        "datasets: {d: {builtin: doodles}}\n"
        "networks: {n: {arch: 'zoo:alexnet_small', dataset: d}}\n"
        "publish: {branch: pages, cname: spec.example.org}\n"
    )
    monkeypatch.chdir(work)
    result = CliRunner().invoke(app, ["publish"])
    assert result.exit_code == 0, result.output
    assert "origin/pages" in result.output
    assert git(bare, "show", "pages:CNAME") == "spec.example.org"
    again = CliRunner().invoke(app, ["publish", "--branch", "other", "--cname", "flag.example.org"])
    assert again.exit_code == 0, again.output
    assert git(bare, "show", "other:CNAME") == "flag.example.org"
