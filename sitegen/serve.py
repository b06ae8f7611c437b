"""Preview a rendered site as GitHub Pages will serve it, optionally rebuilding on change (issue 6 item 5).

GitHub project pages live under a sub-path (``https://USER.github.io/REPO/``), so a link that
works at ``/`` can break there. :func:`serve` mounts the site under ``base`` (``/REPO/``): requests
outside it are 404, ``/`` redirects to it, and folders without ``index.html`` are 404 rather than
listed, as on Pages. Stdlib only (``http.server``), and a polling watcher (no new dependency).

Example:
    >>> serve(Path("output/site"), base="/atlas/")  # doctest: +SKIP
    serving output/site at http://127.0.0.1:8000/atlas/ (Ctrl-C to stop)
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import socket
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sitegen.errors import ServeError, SitegenError

__all__ = ["serve", "make_server", "watch_paths", "normalize_base"]

log = logging.getLogger("sitegen.serve")

# A rebuild callback gets the set of watched files that changed (added, removed or modified), so
# the caller can, e.g., recompute only when the spec itself changed and just re-render otherwise.
Rebuild = Callable[[frozenset[Path]], object]

# GitHub repository names (and so project-page paths) use only these; restricting base to them
# means the raw request path can be compared without percent-decoding ambiguities.
_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")


def normalize_base(base: str) -> str:
    """``"REPO"``, ``"/REPO"`` or ``"/REPO/"`` → ``"/REPO/"``; ``""`` or ``"/"`` → ``"/"``.

    Raises:
        ServeError: a segment with characters a GitHub project path cannot have.

    Example:
        >>> normalize_base("atlas/v2")
        '/atlas/v2/'
    """
    segments = [s for s in base.strip().split("/") if s]
    for s in segments:
        if not _SEGMENT.fullmatch(s) or s in (".", ".."):
            raise ServeError(f"--base {base!r}: {s!r} is not a URL path segment; use e.g. --base /REPO/")
    return "/" + "".join(s + "/" for s in segments)


class _SiteHandler(SimpleHTTPRequestHandler):
    """Serves ``directory`` under the URL prefix ``base``, GitHub Pages style."""

    def __init__(self, *args: Any, base: str, **kwargs: Any) -> None:
        self.base = base  # set before super().__init__, which handles the request
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        if self._inside_base():
            super().do_GET()

    def do_HEAD(self) -> None:
        if self._inside_base():
            super().do_HEAD()

    def _inside_base(self) -> bool:
        """True when the request is under ``base``; otherwise answer it (redirect or 404) here."""
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith(self.base):
            return True
        if path in ("/", self.base.rstrip("/")):
            # Like Pages: /REPO → /REPO/; and / → /REPO/ so the printed root URL works too.
            status = HTTPStatus.MOVED_PERMANENTLY if path != "/" else HTTPStatus.FOUND
            self.send_response(status)
            self.send_header("Location", self.base)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False
        self.send_error(HTTPStatus.NOT_FOUND, f"Outside the site, which is served under {self.base}")
        return False

    def translate_path(self, path: str) -> str:
        # send_head calls this with the full request path: drop the base, keep the leading "/";
        # the parent then strips query/fragment and refuses to climb out of the directory.
        if path.startswith(self.base):
            path = "/" + path[len(self.base):]
        return super().translate_path(path)

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        # GitHub Pages answers 404 for a folder without index.html; a listing would hide such a bug.
        self.send_error(HTTPStatus.NOT_FOUND, "No index.html in this folder")
        return None

    def end_headers(self) -> None:
        # Rebuilt pages must show on reload, not a cached copy.
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)


def make_server(
    site_dir: Path, port: int = 0, *, base: str = "/", host: str = "127.0.0.1"
) -> tuple[ThreadingHTTPServer, str]:
    """A bound, not yet running, HTTP server for ``site_dir`` under ``base``, and its URL.

    Args:
        site_dir: the rendered site (``output/site``).
        port: TCP port; 0 picks a free one (tests).
        base: URL prefix the site is served under, e.g. ``/REPO/`` as on GitHub project pages.
        host: interface to listen on; ``0.0.0.0`` (or ``::``) to be reachable from other machines.

    Returns:
        ``(server, url)``: call ``server.serve_forever()`` (in a thread, for tests), then
        ``server.shutdown()`` and ``server.server_close()``; ``url`` is the site's root URL.

    Raises:
        ServeError: the site folder is missing or has no index.html, a bad ``base``, or the port
            cannot be bound.

    Example:
        >>> server, url = make_server(Path("output/site"), base="/atlas/")  # doctest: +SKIP
        >>> threading.Thread(target=server.serve_forever, daemon=True).start()  # doctest: +SKIP
    """
    site_dir = Path(site_dir).resolve()
    if not site_dir.is_dir():
        raise ServeError(f"{site_dir}: no site folder here; run `sitegen build` (or `render`) first")
    if not (site_dir / "index.html").is_file():
        raise ServeError(f"{site_dir}: incomplete site (no index.html); rerun `sitegen render` first")
    base = normalize_base(base)

    server_cls: type[ThreadingHTTPServer] = ThreadingHTTPServer
    if ":" in host:  # an IPv6 literal: ThreadingHTTPServer is IPv4-only by default
        server_cls = type("ThreadingHTTPServer6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
    handler = functools.partial(_SiteHandler, directory=str(site_dir), base=base)
    try:
        server = server_cls((host, port), handler)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            msg = f"port {port} on {host} is in use; pass --port with a free one (0 picks any)"
        else:
            msg = f"cannot listen on {host}:{port}: {e.strerror or e}; try another --host/--port"
        raise ServeError(msg) from None

    shown = {"": "localhost", "0.0.0.0": "localhost", "::": "localhost"}.get(host, host)
    if ":" in shown:
        shown = f"[{shown}]"
    return server, f"http://{shown}:{server.server_address[1]}{base}"


def serve(
    site_dir: Path,
    *,
    port: int = 8000,
    base: str = "/",
    host: str = "127.0.0.1",
    watch: Rebuild | None = None,
    watched: Sequence[Path] = (),
    interval: float = 0.5,
) -> None:
    """Serve ``site_dir`` under ``base`` until Ctrl-C, rebuilding when a watched file changes.

    Args:
        site_dir: the rendered site (``output/site``); served live from disk, so a rebuild that
            rewrites it shows on the next reload.
        port: TCP port (0 picks a free one).
        base: URL prefix, e.g. ``/REPO/`` to preview a GitHub project page.
        host: interface to listen on.
        watch: called (in a watcher thread) with the set of changed files after a change under
            ``watched``; its errors are logged and serving goes on.
        watched: files and folders to poll (the spec file, the templates folder).
        interval: seconds between polls.

    Raises:
        ServeError: as :func:`make_server`.
        ValueError: ``watch`` given without ``watched`` paths.
    """
    if watch is not None and not watched:
        raise ValueError("serve(watch=...) needs the paths to watch (watched=[spec, templates])")
    server, url = make_server(site_dir, port, base=base, host=host)
    stop = threading.Event()
    watcher: threading.Thread | None = None
    if watch is not None:
        watcher = threading.Thread(
            target=watch_paths, args=(watched, watch), kwargs={"interval": interval, "stop_event": stop},
            name="sitegen-watch", daemon=True,
        )
        watcher.start()
        log.info("watching %s", ", ".join(str(p) for p in watched))
    log.info("serving %s at %s (Ctrl-C to stop)", site_dir, url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopped")  # Ctrl-C is how a preview ends, not an error
    finally:
        stop.set()
        server.server_close()
        if watcher is not None:
            watcher.join(timeout=interval + 1)


def watch_paths(
    paths: Iterable[Path],
    callback: Rebuild,
    *,
    interval: float = 0.5,
    stop_event: threading.Event,
    ready: threading.Event | None = None,
) -> None:
    """Poll ``paths`` every ``interval`` seconds and call ``callback(changed)`` after each change.

    Blocks until ``stop_event`` is set: run it in a thread. Folders are scanned recursively; hidden
    files, editor backups (``~``, ``#...#``) and ``__pycache__`` are ignored so that an editor's
    swap file does not trigger a rebuild per keystroke. A change is reported once the files stop
    changing (two equal scans), so a save in several writes gives one rebuild. Exceptions from
    ``callback`` are logged and watching goes on: a half-edited template must not end the preview.

    Args:
        paths: files and folders to watch; they may not exist yet.
        callback: receives the frozenset of files added, removed or modified.
        interval: seconds between scans (0.5: rebuilds feel immediate, idle cost is a few stats).
        stop_event: set it to end the loop.
        ready: set once the first scan is done; changes made before it are not reported (they
            are the starting state).

    Example:
        >>> stop = threading.Event()  # doctest: +SKIP
        >>> threading.Thread(target=watch_paths, args=([Path("templates")], print),
        ...                  kwargs={"stop_event": stop}, daemon=True).start()  # doctest: +SKIP
    """
    paths = [Path(p) for p in paths]
    before = _snapshot(paths)
    if ready is not None:
        ready.set()
    while not stop_event.wait(interval):
        now = _snapshot(paths)
        if now == before:
            continue
        # Settle: wait until two scans agree, so a multi-write save is one change, not two.
        while not stop_event.wait(min(interval, 0.1)):
            again = _snapshot(paths)
            if again == now:
                break
            now = again
        changed = frozenset(p for p in before.keys() | now.keys() if before.get(p) != now.get(p))
        before = now
        try:
            callback(changed)
        except SitegenError as e:
            log.error("rebuild failed: %s", e)
        except Exception:
            log.exception("rebuild failed")


def _snapshot(paths: Iterable[Path]) -> dict[Path, tuple[int, int]]:
    """``{file: (mtime_ns, size)}`` for every watched file; size too, since mtime can be coarse."""
    seen: dict[Path, tuple[int, int]] = {}

    def add(path: Path) -> None:
        try:
            st = path.stat()
        except OSError:  # vanished between listing and stat: the next scan sees it gone
            return
        seen[path] = (st.st_mtime_ns, st.st_size)

    for root in paths:
        if root.is_file():
            add(root)
            continue
        for folder, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not _ignored(d) and d != "__pycache__")
            for name in names:
                if not _ignored(name):
                    add(Path(folder, name))
    return seen


def _ignored(name: str) -> bool:
    return name.startswith((".", "#")) or name.endswith(("~", ".swp", ".tmp"))
