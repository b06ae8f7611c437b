"""A stdlib link checker for a rendered site: every internal link, image, script and style resolves.

Used by the tests and by ``sitegen build --check``. It reads every ``.html`` (and ``.css``) file with
:mod:`html.parser`, so it needs no browser and no server: about a second per thousand pages.

What counts as a problem (each is something a reader of the site would hit):

- a page-internal URL whose file is missing, or whose ``#fragment`` names no element id;
- a root-absolute URL (``/assets/x``): it breaks under a sub-path such as GitHub project pages;
- a URL that leaves the site folder (``../../outside``) or names a folder (file:// shows no index.html);
- an ``<img>`` without ``width`` and ``height`` (the layout jumps while images load).
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["LinkProblem", "check_site"]

_URL_ATTRS = {
    ("a", "href"),
    ("link", "href"),
    ("img", "src"),
    ("script", "src"),
    ("source", "src"),
    ("iframe", "src"),
    ("video", "src"),
    ("audio", "src"),
    ("video", "poster"),
}
_CSS_URL = re.compile(r"""url\(\s*(['"]?)(.*?)\1\s*\)""")
_EXTERNAL = ("http:", "https:", "mailto:", "data:", "tel:")


@dataclass(frozen=True, slots=True)
class LinkProblem:
    """One broken reference: the page (site path), the URL as written, and what is wrong."""

    page: str
    url: str
    reason: str

    def __str__(self) -> str:
        return f"{self.page}: {self.url}: {self.reason}"


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []
        self.ids: set[str] = set()
        self.bad_imgs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v for k, v in attrs if v is not None}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and "name" in a:
            self.ids.add(a["name"])
        for key, value in a.items():
            if (tag, key) in _URL_ATTRS:
                self.urls.append(value)
            elif key == "srcset":
                self.urls.extend(part.strip().split(" ")[0] for part in value.split(",") if part.strip())
            elif key == "style":
                self.urls.extend(m.group(2) for m in _CSS_URL.finditer(value))
        if tag == "img" and not ("width" in a and "height" in a):
            self.bad_imgs.append(a.get("src", "?"))

    handle_startendtag = handle_starttag


def check_site(site_dir: Path) -> list[LinkProblem]:
    """Check every internal reference of the site under ``site_dir``.

    Args:
        site_dir: the rendered site's folder.

    Returns:
        The problems found, sorted by page then URL (empty: the site is sound).

    Example:
        >>> problems = check_site(Path("output/site"))
        >>> assert not problems, "\\n".join(map(str, problems))
    """
    site_dir = Path(site_dir)
    files: set[str] = set()
    for folder, _dirs, names in os.walk(site_dir):
        rel = os.path.relpath(folder, site_dir).replace(os.sep, "/")
        for name in names:
            files.add(name if rel == "." else f"{rel}/{name}")
    ids: dict[str, set[str]] = {}
    refs: dict[str, list[str]] = {}
    problems: list[LinkProblem] = []
    for path in sorted(files):
        if path.endswith(".html"):
            parser = _PageParser()
            parser.feed((site_dir / path).read_text(encoding="utf-8"))
            parser.close()
            ids[path] = parser.ids
            refs[path] = parser.urls
            problems += [LinkProblem(path, src, "<img> without width and height") for src in parser.bad_imgs]
        elif path.endswith(".css"):
            refs[path] = [
                m.group(2) for m in _CSS_URL.finditer((site_dir / path).read_text(encoding="utf-8"))
            ]
    # Pages of one folder share most URLs (assets, sprites, probe images): check each (folder, URL) once.
    seen: dict[tuple[str, str], str] = {}
    for page, urls in refs.items():
        folder = posixpath.dirname(page)
        for url in urls:
            if url.startswith("#"):
                reason = _check(page, url, files, ids)
            elif (folder, url) in seen:
                reason = seen[folder, url]
            else:
                reason = seen[folder, url] = _check(page, url, files, ids)
            if reason:
                problems.append(LinkProblem(page, url, reason))
    return sorted(problems, key=lambda p: (p.page, p.url))


def _check(page: str, url: str, files: set[str], ids: dict[str, set[str]]) -> str:
    if url.startswith("//") or url.lower().startswith(_EXTERNAL):
        return ""
    if url.lower().startswith("javascript:"):
        return "javascript: URL"
    if url.startswith("/"):
        return "root-absolute URL (breaks under a sub-path); use a page-relative one"
    parts = urlsplit(url)
    if parts.scheme:
        return f"unexpected scheme {parts.scheme!r}"
    if not parts.path:
        if not parts.fragment:
            return "empty URL"
        target = page
    else:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(page), unquote(parts.path)))
        if target == ".." or target.startswith("../"):
            return "leaves the site folder"
        if parts.path.endswith("/") or (
            target not in files and any(f.startswith(target + "/") for f in files)
        ):
            return "links a folder; file:// needs an explicit index.html"
        if target not in files:
            return "missing file"
    if parts.fragment and target.endswith(".html") and unquote(parts.fragment) not in ids.get(target, set()):
        return f"no element with id {parts.fragment!r} in {target}"
    return ""
