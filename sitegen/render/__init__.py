"""Render: artifact store → static HTML atlas. Never imports torch (``sitegen render`` takes seconds).

``render_site(store_root, site_dir)`` reads the store only (:mod:`sitegen.store`), plans every page as
plain view models (:mod:`.views`, with Plotly figure dicts from :mod:`.charts`), renders the Jinja
templates (:mod:`.env`) into a temporary folder beside ``site_dir`` and swaps it into place, so a
failed render never destroys the previous site. The site layout is documented in docs/INTERNALS.md
("The site layout").
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sitegen.errors import RenderError
from sitegen.render.assets import site_assets
from sitegen.render.env import make_env, render_template, templates_dir
from sitegen.render.links import LinkProblem, check_site
from sitegen.render.search import INDEX_PATH, search_script
from sitegen.render.views import SitePlan, plan_site
from sitegen.store import Store

__all__ = ["render_site", "SiteReport", "check_site", "LinkProblem"]


@dataclass(frozen=True, slots=True)
class SiteReport:
    """What a render wrote.

    Attributes:
        pages: HTML pages.
        files: all files (pages, assets, images, ``.nojekyll``).
        bytes: their total size.
        seconds: wall time of the render.
    """

    pages: int
    files: int
    bytes: int
    seconds: float


def render_site(
    store_root: Path,
    site_dir: Path,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> SiteReport:
    """Render the atlas of the store at ``store_root`` into ``site_dir``.

    Args:
        store_root: an artifact store with a finished build (``output/store``).
        site_dir: the site folder (``output/site``); replaced as a whole once the new site is complete.
            It must be absent, empty, or a previous site (it holds ``.nojekyll``).
        progress: called as ``progress(done, total)`` after each page.

    Returns:
        Counts, size and time of what was written.

    Raises:
        StoreError: the store is missing, foreign, or of another format.
        RenderError: the store lacks a file a page needs, or ``site_dir`` is not a site.

    Example:
        >>> report = render_site(Path("output/store"), Path("output/site"))
        >>> print(f"{report.pages} pages in {report.seconds:.1f} s")
    """
    start = time.perf_counter()
    site_dir = Path(site_dir)
    _check_target(site_dir)
    plan = plan_site(Store(store_root))
    site_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{site_dir.name}.", suffix=".tmp", dir=site_dir.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; a web server must be able to read the site
        n_files, n_bytes = _write(plan, tmp, progress)
        _swap(tmp, site_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SiteReport(
        pages=len(plan.pages), files=n_files, bytes=n_bytes, seconds=time.perf_counter() - start
    )


def _check_target(site_dir: Path) -> None:
    if not site_dir.exists():
        return
    if not site_dir.is_dir():
        raise RenderError(f"{site_dir}: exists and is not a folder; choose another site folder")
    if any(site_dir.iterdir()) and not (site_dir / ".nojekyll").is_file():
        raise RenderError(
            f"{site_dir}: not empty and not a sitegen site (no .nojekyll); refusing to replace it"
        )


class _Copier:
    """Hard-links files into the site when the store is on the same file system, else copies them.

    Linking is safe because the store never rewrites a file in place (atomic temp file + rename).
    """

    def __init__(self) -> None:
        self.link = True

    def __call__(self, src: Path, dst: Path) -> int:
        if self.link:
            try:
                os.link(src, dst)
                return src.stat().st_size
            except FileNotFoundError:
                raise RenderError(f"{src}: missing; the store is incomplete, rerun `sitegen build`") from None
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                    raise
                self.link = False
        try:
            shutil.copyfile(src, dst)
        except FileNotFoundError:
            raise RenderError(f"{src}: missing; the store is incomplete, rerun `sitegen build`") from None
        return dst.stat().st_size


def _write(plan: SitePlan, out: Path, progress: Callable[[int, int], None] | None) -> tuple[int, int]:
    env = make_env()
    copy = _Copier()
    made: set[str] = set()

    def folder(site_path: str) -> Path:
        parent = site_path.rpartition("/")[0]
        if parent not in made:
            (out / parent).mkdir(parents=True, exist_ok=True)
            made.add(parent)
        return out / site_path

    n_files = n_bytes = 0
    # templates/assets/* as they are: css, app.js and plotly.min.js, the vendored cartesian partial
    # bundle of plotly.js (1.5 MB instead of the full 4.8 MB; every chart here is bar, scatter or
    # heatmap). No CDN: the site must work offline and from file://.
    assets = sorted(p for p in (templates_dir() / "assets").iterdir() if p.is_file())
    generated = site_assets(plan)
    for src in assets:
        head, tail = generated.get(src.name, (b"", b""))
        if head or tail:  # issue 13: what every page would otherwise repeat, once per site
            data = head + src.read_bytes() + tail
            folder(f"assets/{src.name}").write_bytes(data)
            n_bytes += len(data)
        else:
            n_bytes += copy(src, folder(f"assets/{src.name}"))
    (out / ".nojekyll").write_bytes(b"")
    # Issue 15: the search box's index, collected from the planned pages (sitegen.render.search).
    index = search_script(plan.pages).encode("utf-8")
    folder(INDEX_PATH).write_bytes(index)
    n_bytes += len(index)
    n_files += len(assets) + 2
    for site_path, src in plan.files.items():
        n_bytes += copy(src, folder(site_path))
    n_files += len(plan.files)
    total = len(plan.pages)
    for i, page in enumerate(plan.pages, 1):
        data = render_template(env, page.template, page.context).encode("utf-8")
        folder(page.path).write_bytes(data)
        n_bytes += len(data)
        if progress is not None:
            progress(i, total)
    return n_files + total, n_bytes


def _swap(tmp: Path, site_dir: Path) -> None:
    """Put the new site in place; the old one is removed only once the new one is there."""
    if not site_dir.exists():
        os.replace(tmp, site_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{site_dir.name}.", suffix=".old", dir=site_dir.parent))
    old.rmdir()  # only the unique name is wanted: rename needs an absent (or empty) target
    os.replace(site_dir, old)
    try:
        os.replace(tmp, site_dir)
    except BaseException:
        os.replace(old, site_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
