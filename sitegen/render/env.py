"""The Jinja environment of the site: autoescape everywhere, StrictUndefined, one ``url`` filter.

Templates receive plain values (see :mod:`sitegen.render.views`); the only filter they need is ``url``,
which turns a site path (``"tiny-alex/conv1/unit-0007.html"``) into a page-relative one: a bare file
name within the page's folder, else prefixed by the page's ``root`` (``"../../"``). Page-relative
URLs work from ``file://``, at ``/`` and under a sub-path such as GitHub project pages
(shared/RECIPES.md).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jinja2

import sitegen
from sitegen.errors import RenderError


def templates_dir() -> Path:
    """Where the templates live.

    Returns:
        ``sitegen/templates`` inside an installed wheel (hatch force-include), else ``<repo>/templates``
        for an editable install.

    Raises:
        RenderError: neither folder exists (a broken install).
    """
    package = Path(sitegen.__file__).resolve().parent
    for candidate in (package / "templates", package.parent / "templates"):
        if (candidate / "base.html").is_file():
            return candidate
    raise RenderError(f"templates not found next to {package}; reinstall sitegen")


@jinja2.pass_context
def _url(ctx: jinja2.runtime.Context, path: str) -> str:
    # Every page passes its folder `here` ("tiny-alex/conv1/") and `root` ("../../"): targets in the
    # same folder (neighbouring units, sprites) get a bare file name, all others go through the root.
    here = ctx["here"]
    if here and path.startswith(here):
        return path[len(here) :]
    return ctx["root"] + path


def make_env(directory: Path | None = None) -> jinja2.Environment:
    """The site's Jinja environment.

    Args:
        directory: the templates folder; defaults to :func:`templates_dir`.

    Returns:
        An environment that escapes everything (user strings are never trusted) and raises on any
        undefined value instead of rendering an empty string.
    """
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory or templates_dir()),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters["url"] = _url
    # |tojson (figures): no spaces after separators (issue 13: site size); keys sorted, byte-stable.
    env.policies["json.dumps_kwargs"] = {"sort_keys": True, "separators": (",", ":")}
    return env


# Indentation before a tag, and runs of spaces between tags: what the templates' layout adds to every
# page (issue 13: site size). Outside <pre>/<textarea> HTML collapses both to at most one space, which
# the newline (kept) or the single space left still gives: the page renders the same.
_INDENT = re.compile(r"\n[ \t]+(?=<)")
_GAP = re.compile(r">[ \t]{2,}<")


def trim_markup(html: str) -> str:
    """``html`` without the indentation before its tags and with runs of spaces between tags cut to one;
    unchanged when it has a ``<pre>`` or ``<textarea>`` (where white space shows)."""
    if "<pre" in html or "<textarea" in html:
        return html
    return _GAP.sub("> <", _INDENT.sub("\n", html))


def render_template(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    """Render one template, turning a template error into a one-line :class:`RenderError`.

    Args:
        env: from :func:`make_env`.
        name: template file name, e.g. ``"unit.html"``.
        context: the page's plain values.

    Returns:
        The HTML text, its markup trimmed (:func:`trim_markup`).
    """
    try:
        return trim_markup(env.get_template(name).render(context))
    except jinja2.UndefinedError as e:
        raise RenderError(f"{name}: {e.message} (a value the page needs is missing from the store)") from e
    except jinja2.TemplateError as e:
        raise RenderError(f"{name}: {e}") from e
