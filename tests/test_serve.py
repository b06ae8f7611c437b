"""The preview server (site under a GitHub-project-style sub-path) and the polling watcher.

Servers listen on loopback port 0 and are shut down in ``finally``; every wait is bounded.
"""

from __future__ import annotations

import http.client
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sitegen.errors import ServeError, SpecError
from sitegen.serve import make_server, normalize_base, serve, watch_paths

INDEX = b"<!doctype html><title>atlas</title>\n"
PAGE = b"<!doctype html><title>unit 7</title>\n"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    (site / "nets" / "a").mkdir(parents=True)
    (site / "nets" / "b").mkdir(parents=True)
    (site / "index.html").write_bytes(INDEX)
    (site / "nets" / "a" / "index.html").write_bytes(PAGE)
    (site / "nets" / "b" / "unit-7.html").write_bytes(PAGE)
    (tmp_path / "secret.txt").write_text("outside the site")
    return site


@pytest.fixture
def server(site: Path) -> Iterator[tuple[str, int]]:
    """A running server for ``site`` under ``/REPO/``: yields (url, port)."""
    srv, url = make_server(site, 0, base="/REPO/")
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield url, srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One request that does not follow redirects."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_url_names_the_sub_path(server: tuple[str, int]) -> None:
    url, port = server
    assert url == f"http://127.0.0.1:{port}/REPO/"


@pytest.mark.parametrize(
    ("path", "body"),
    [("/REPO/", INDEX), ("/REPO/index.html", INDEX), ("/REPO/nets/a/", PAGE),
     ("/REPO/nets/b/unit-7.html", PAGE), ("/REPO/index.html?v=2#top", INDEX)],
)
def test_pages_under_the_base_are_served_byte_for_byte(server: tuple[str, int], path: str,
                                                       body: bytes) -> None:
    status, headers, got = get(server[1], path)
    assert (status, got) == (200, body)
    assert headers["Cache-Control"] == "no-store"


def test_head_has_no_body(server: tuple[str, int]) -> None:
    status, headers, got = get(server[1], "/REPO/index.html", "HEAD")
    assert (status, got, headers["Content-Length"]) == (200, b"", str(len(INDEX)))


@pytest.mark.parametrize(
    "path",
    ["/index.html", "/nets/a/", "/REPOSITORY/index.html", "/favicon.ico", "/REPO/missing.html",
     "/REPO/nets/b/", "/REPO/../secret.txt", "/REPO/%2e%2e/secret.txt"],
)
def test_outside_the_base_missing_or_unindexed_is_404(server: tuple[str, int], path: str) -> None:
    status, _, body = get(server[1], path)
    assert status == 404
    assert b"outside the site" not in body  # ../ never reaches tmp_path/secret.txt


@pytest.mark.parametrize(("path", "status"), [("/", 302), ("/REPO", 301), ("/REPO/nets/a", 301)])
def test_redirects_keep_the_base(server: tuple[str, int], path: str, status: int) -> None:
    got, headers, _ = get(server[1], path)
    assert got == status
    assert headers["Location"] == {"/": "/REPO/", "/REPO": "/REPO/", "/REPO/nets/a": "/REPO/nets/a/"}[path]


def test_root_base_serves_at_slash(site: Path) -> None:
    srv, url = make_server(site, 0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        assert url.endswith("/") and url.count("/") == 3
        assert get(srv.server_address[1], "/")[::2] == (200, INDEX)
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize(("base", "expected"), [("", "/"), ("/", "/"), ("REPO", "/REPO/"), ("/a/b", "/a/b/"),
                                                ("//a//", "/a/")])
def test_normalize_base(base: str, expected: str) -> None:
    assert normalize_base(base) == expected


@pytest.mark.parametrize("base", ["/my repo/", "/../", "/a?b/"])
def test_bad_base_is_a_one_line_error(base: str) -> None:
    with pytest.raises(ServeError, match=r"--base .*not a URL path segment; use e\.g\. --base /REPO/"):
        normalize_base(base)


def test_missing_or_incomplete_site_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ServeError, match=r"no site folder here; run `sitegen build`"):
        serve(tmp_path / "nope", port=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ServeError, match=r"incomplete site \(no index\.html\)"):
        make_server(tmp_path / "empty")


def test_port_in_use_is_a_publish_error(site: Path) -> None:
    srv, _ = make_server(site, 0)
    try:
        with pytest.raises(ServeError, match=r"port \d+ on 127\.0\.0\.1 is in use; pass --port"):
            make_server(site, srv.server_address[1])
    finally:
        srv.server_close()


def test_watch_without_paths_is_a_programming_error(site: Path) -> None:
    with pytest.raises(ValueError, match="needs the paths"):
        serve(site, port=0, watch=print)


# --- watcher ---------------------------------------------------------------------------------------
class Recorder:
    """A watch callback that records each call and can fail on the first."""

    def __init__(self, fail_first: bool = False) -> None:
        self.calls: list[frozenset[Path]] = []
        self.event = threading.Event()
        self.fail_first = fail_first

    def __call__(self, changed: frozenset[Path]) -> None:
        self.calls.append(changed)
        self.event.set()
        if self.fail_first and len(self.calls) == 1:
            raise SpecError(["spec.yaml:3: title: broken on purpose"])

    def wait(self) -> frozenset[Path]:
        assert self.event.wait(timeout=10), "the watcher did not call back within 10 s"
        self.event.clear()
        return self.calls[-1]


@pytest.fixture
def watching(tmp_path: Path) -> Iterator[tuple[Path, Path, threading.Event]]:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "base.html").write_text("<html>")
    spec = tmp_path / "spec.yaml"
    spec.write_text("title: a\n")
    stop = threading.Event()
    yield templates, spec, stop
    stop.set()


def start(paths: list[Path], callback: Recorder, stop: threading.Event) -> threading.Thread:
    """Start a watcher and return once its first scan is done (later writes are changes)."""
    ready = threading.Event()
    thread = threading.Thread(target=watch_paths, args=(paths, callback),
                              kwargs={"interval": 0.05, "stop_event": stop, "ready": ready}, daemon=True)
    thread.start()
    assert ready.wait(timeout=10)
    return thread


def test_watcher_reports_the_changed_file(watching: tuple[Path, Path, threading.Event]) -> None:
    templates, spec, stop = watching
    rec = Recorder()
    thread = start([templates, spec], rec, stop)
    try:
        # A hidden swap file first: ignored, so the first report holds only the real change.
        (templates / ".base.html.swp").write_text("swap")
        spec.write_text("title: a longer title\n")
        assert rec.wait() == {spec}
        (templates / "sub").mkdir()
        (templates / "sub" / "unit.html").write_text("{{ unit }}")
        assert rec.wait() == {templates / "sub" / "unit.html"}
        (templates / "base.html").unlink()
        assert rec.wait() == {templates / "base.html"}
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()


def test_watcher_survives_a_failing_rebuild(watching: tuple[Path, Path, threading.Event],
                                            caplog: pytest.LogCaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI's logging set-up (run in-process by test_cli) stops "sitegen" records at its own
    # handler; let them reach caplog's root handler whatever ran before.
    monkeypatch.setattr(logging.getLogger("sitegen"), "propagate", True)
    templates, spec, stop = watching
    rec = Recorder(fail_first=True)
    thread = start([spec], rec, stop)
    try:
        spec.write_text("title: [broken\n")
        rec.wait()
        spec.write_text("title: fixed again\n")
        assert rec.wait() == {spec}
    finally:
        stop.set()
        thread.join(timeout=5)
    assert "rebuild failed: spec.yaml:3: title: broken on purpose" in caplog.text


def test_watcher_accepts_paths_that_do_not_exist_yet(tmp_path: Path) -> None:
    stop = threading.Event()
    rec = Recorder()
    later = tmp_path / "later.yaml"
    thread = start([later], rec, stop)
    try:
        later.write_text("x")
        assert rec.wait() == {later}
    finally:
        stop.set()
        thread.join(timeout=5)
