"""The ``sitegen`` command line: build · render · layers · schema.

The only module with typer/rich, exit codes and progress bars. Errors a user
can cause (:class:`~sitegen.errors.SitegenError`) become one line per problem
on stderr and exit code 2; ``--debug`` shows the traceback instead. torch is
imported lazily, only by the commands that compute.
"""

from __future__ import annotations

import errno
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from sitegen import __version__
from sitegen.errors import SitegenError

app = typer.Typer(
    name="sitegen",
    help="Turn a YAML experiment spec into a browsable static HTML atlas of what CNN units learned.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
log = logging.getLogger("sitegen")

SpecArg = Annotated[Path, typer.Argument(help="The experiment spec (YAML).")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars, warnings and errors only.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sitegen {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """sitegen: one YAML spec in, a browsable atlas of what CNN units learned out."""


@contextmanager
def _user_errors(debug: bool) -> Iterator[None]:
    """Turn SitegenError into one line per problem and exit code 2 (``--debug`` re-raises)."""
    try:
        yield
    except SitegenError as e:
        if debug:
            raise
        for line in str(e).splitlines() or [type(e).__name__]:
            err.print(f"[bold red]error:[/] {line}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(2) from None
    except OSError as e:
        # a disk that fills up or turns read-only mid-build (render, training checkpoints): the machine's
        # state, never a bug, so one line too; the store's own writes say it as StoreError already
        if debug or e.errno not in _FULL_OR_READ_ONLY:
            raise
        where = f"{e.filename}: " if e.filename else ""
        err.print(f"[bold red]error:[/] {where}cannot write: {e.strerror}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err.print("interrupted: what was finished is kept; rerun to resume")
        raise typer.Exit(130) from None


_FULL_OR_READ_ONLY = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def _setup_logging(quiet: bool, debug: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s" if quiet else "%(message)s"))
    root = logging.getLogger("sitegen")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class _Progress:
    """Rich progress bars on a terminal; plain lines otherwise (CI logs: rich draws nothing there).

    A plain line comes every ~10 % (at most one per 5 s), and at least every 30 s while a task
    reports, with the rate so far and an ETA (issue 13: a bar that stood still for 14 minutes).
    """

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = err.is_terminal
        self._rich: Any = None
        self._tasks: dict[str, Any] = {}
        self._last: dict[str, tuple[float, int]] = {}
        self._start: dict[str, tuple[float, int]] = {}

    def __enter__(self) -> _Progress:
        if self.tty and not self.quiet:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._rich = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=err,
                transient=True,
            )
            self._rich.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.__exit__(*exc)

    def __call__(self, label: str, done: int, total: int) -> None:
        if self.quiet:
            return
        if self._rich is not None:
            task = self._tasks.get(label)
            if task is None:
                task = self._tasks[label] = self._rich.add_task(label, total=total)
            self._rich.update(task, completed=done, total=total)
            return
        now = time.monotonic()
        t0, done0 = self._start.setdefault(label, (now, done))
        last_t, last_done = self._last.get(label, (0.0, -1))
        step = max(1, total // 10)
        due = (done - last_done >= step and now - last_t >= 5) or (now - last_t >= 30 and done > last_done)
        if done == total or due or last_done < 0:
            self._last[label] = (now, done)
            eta = _eta(now - t0, done - done0, total - done)
            print(f"  {label}: {done}/{total}{eta}", file=sys.stderr, flush=True)


def _eta(elapsed: float, done: int, left: int) -> str:
    """`` (12.3/s, ETA 0:04:10)`` once there is a rate to go by."""
    if elapsed < 1 or done <= 0 or left <= 0:
        return ""
    rate = done / elapsed
    seconds = int(left / rate + 0.5)
    return f" ({rate:.3g}/s, ETA {seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d})"


@app.command()
def build(
    spec: SpecArg = Path("experiments.yaml"),
    debug: DebugOpt = False,
    quiet: QuietOpt = False,
    no_render: Annotated[bool, typer.Option("--no-render", help="Compute the store only.")] = False,
    check: Annotated[bool, typer.Option("--check", help="Then check every link and image.")] = False,
) -> None:
    """Train (if asked), mine, analyse and render the atlas described by SPEC."""
    _setup_logging(quiet, debug)
    with _user_errors(debug):
        from sitegen.build import build as run_build
        from sitegen.models import check_arch
        from sitegen.spec import load_spec

        loaded = load_spec(spec, arch_check=check_arch)
        with _Progress(quiet) as progress:
            result = run_build(loaded, progress=progress, render=not no_render)
        if check and result.site is not None:
            from sitegen.errors import RenderError
            from sitegen.render import check_site

            problems = check_site(result.site)
            if problems:
                raise RenderError("\n".join(f"broken link: {p}" for p in problems[:20]))
        if not quiet:
            err.print(f"[green]done[/] in {result.seconds:.1f}s: {result.summary}", highlight=False)
            if result.site is not None:
                err.print(f"open {result.site / 'index.html'}", highlight=False)


@app.command()
def render(
    spec: SpecArg = Path("experiments.yaml"),
    store: Annotated[
        Path | None, typer.Option(help="Store folder to render (default: the spec's output/store).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Site folder to write (default: the spec's output/site).")
    ] = None,
    debug: DebugOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Re-draw the site from the artifact store alone (no torch, seconds)."""
    _setup_logging(quiet, debug)
    with _user_errors(debug):
        from sitegen.render import render_site

        if store is None or out is None:
            from sitegen.spec import load_spec

            loaded = load_spec(spec)
            store = store or loaded.output / "store"
            out = out or loaded.output / "site"
        with _Progress(quiet) as progress:
            report = render_site(store, out, progress=lambda d, n: progress("render", d, n))
        if not quiet:
            err.print(
                f"[green]rendered[/] {report.pages} pages in {report.seconds:.2f}s "
                f"({report.pages / max(report.seconds, 1e-9):.0f} pages/s) → {out / 'index.html'}",
                highlight=False,
            )


@app.command()
def layers(
    target: Annotated[
        str, typer.Argument(help="A network of the spec, or an arch such as torchvision:alexnet.")
    ],
    spec: Annotated[Path, typer.Option(help="Spec to look TARGET up in.")] = Path("experiments.yaml"),
    input_size: Annotated[
        int | None, typer.Option(help="Input side in px (default: dataset's or 224).")
    ] = None,
    num_classes: Annotated[int, typer.Option(help="Classes, for an arch TARGET.")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Print the layer table (friendly name, module path, shape, units, receptive field)."""
    _setup_logging(True, debug)
    with _user_errors(debug):
        from sitegen.build import layer_table_for

        table = layer_table_for(target, spec_path=spec, input_size=input_size, num_classes=num_classes)
        rows = [info.to_dict() for info in table]
        if as_json:
            typer.echo(json.dumps(rows, indent=1))
            return
        from rich.table import Table

        t = Table("name", "module", "kind", "shape", "units", "rf_size", "rf_stride", title=target)
        for r in rows:
            shape = "×".join(str(s) for s in r["shape"])
            t.add_row(
                r["name"],
                r["module"] or "(output)",
                r["kind"],
                shape,
                str(r["units"]),
                str(r["rf_size"]),
                str(r["rf_stride"]),
            )
        Console().print(t)


@app.command()
def diff(
    a: Annotated[str, typer.Argument(help="Older side: NETWORK@CHECKPOINT of the spec, or an output DIR.")],
    b: Annotated[str, typer.Argument(help="Newer side, the same forms; the diff is filed in its store.")],
    spec: Annotated[Path, typer.Option(help="Spec whose store NETWORK@CHECKPOINT refers to.")] = Path(
        "experiments.yaml"
    ),
    debug: DebugOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Compare two checkpoints (top-k overlap, class preferences, filters) and render the diff pages."""
    _setup_logging(quiet, debug)
    with _user_errors(debug):
        from sitegen.diff import add_diff, is_folder_ref
        from sitegen.render import render_site

        store_root = None
        if not all(is_folder_ref(r) for r in (a, b)):
            from sitegen.spec import load_spec

            store_root = load_spec(spec).output / "store"
        result = add_diff(a, b, store_root=store_root)
        with _Progress(quiet) as progress:
            render_site(result.store_root, result.site_dir, progress=lambda d, n: progress("render", d, n))
        if not quiet:
            err.print(result.summary, highlight=False)
            err.print(f"open {result.site_dir / 'diff' / result.name / 'index.html'}", highlight=False)


@app.command()
def publish(
    site: Annotated[
        Path | None, typer.Argument(help="Site folder to publish (default: the spec's output/site).")
    ] = None,
    spec: Annotated[
        Path,
        typer.Option(help="Spec whose publish: section gives the defaults (unused when absent)."),
    ] = Path("experiments.yaml"),
    remote: Annotated[str | None, typer.Option(help="Git remote to push to (spec, else origin).")] = None,
    branch: Annotated[str | None, typer.Option(help="Branch to publish to (spec, else gh-pages).")] = None,
    cname: Annotated[str | None, typer.Option(help="Custom domain, written as CNAME.")] = None,
    message: Annotated[
        str | None,
        typer.Option("--message", "-m", help="Commit subject (version and spec hash are appended)."),
    ] = None,
    no_push: Annotated[bool, typer.Option("--no-push", help="Commit the branch locally only.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite a deploy made by a newer sitegen.")
    ] = False,
    debug: DebugOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Publish a finished site to a gh-pages branch (ghp-import; .nojekyll; version + spec stamp).

    Flags override the spec's ``publish:`` section, which overrides the built-in defaults.
    """
    _setup_logging(quiet, debug)
    with _user_errors(debug):
        from sitegen.publish import publish as run_publish
        from sitegen.spec import PublishSpec, load_spec

        conf, out = PublishSpec(), Path("output")
        if spec.is_file():
            loaded = load_spec(spec)
            conf, out = loaded.publish, loaded.output
        r = run_publish(
            site if site is not None else out / "site",
            repo_dir=Path.cwd(),
            remote=remote or conf.remote,
            branch=branch or conf.branch,
            cname=cname if cname is not None else conf.cname,
            message=message if message is not None else conf.message,
            push=not no_push,
            force=force,
        )
        if not quiet:
            where = f"{r.remote}/{r.branch}" if r.pushed else f"{r.branch} (not pushed)"
            err.print(f"[green]published[/] {r.files} files to {where} at {r.commit[:7]}", highlight=False)


@app.command()
def serve(
    site: Annotated[Path, typer.Argument(help="Site folder to serve.")] = Path("output/site"),
    port: Annotated[int, typer.Option(help="TCP port (0: any free port).")] = 8000,
    base: Annotated[str, typer.Option(help="URL sub-path, e.g. /REPO/ as on GitHub project pages.")] = "/",
    watch: Annotated[
        bool, typer.Option("--watch", help="Re-render when templates change; rebuild on spec change.")
    ] = False,
    spec: Annotated[Path, typer.Option(help="Spec to rebuild from with --watch.")] = Path("experiments.yaml"),
    debug: DebugOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Preview the site on 127.0.0.1 as GitHub Pages serves it (under --base)."""
    _setup_logging(quiet, debug)
    with _user_errors(debug):
        from sitegen.render.env import templates_dir
        from sitegen.serve import serve as run_serve

        rebuild = None
        watched: tuple[Path, ...] = ()
        if watch:
            rebuild = _rebuilder(spec, site)
            watched = (spec, templates_dir())
        run_serve(site, port=port, base=base, watch=rebuild, watched=watched)


def _rebuilder(spec_path: Path, site: Path):  # noqa: ANN202 - a closure handed to serve
    """Spec changed → build (computes only what the store lacks); templates changed → render only."""

    def rebuild(changed: frozenset[Path]) -> None:
        from sitegen.render import render_site
        from sitegen.spec import load_spec

        try:
            spec = load_spec(spec_path)
            if spec_path.resolve() in {p.resolve() for p in changed}:
                from sitegen.build import build as run_build
                from sitegen.models import check_arch

                run_build(load_spec(spec_path, arch_check=check_arch))
            else:
                render_site(spec.output / "store", site)
            log.info("re-rendered after %d change(s)", len(changed))
        except SitegenError as e:
            for line in str(e).splitlines():
                err.print(f"[bold red]error:[/] {line}", highlight=False)

    return rebuild


@app.command()
def schema() -> None:
    """Print the JSON Schema of the experiment spec."""
    from sitegen.spec import json_schema

    typer.echo(json.dumps(json_schema(), indent=1))
