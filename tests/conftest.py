"""Fixtures shared by test files: the session's one chromium (playwright's sync API runs one per process
at a time, so every browser test opens its pages on this one; a second ``sync_playwright()`` fails)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """Debian's chromium driven by playwright (skipped without it, a failure under CI)."""
    from test_browser import CHROMIUM, _require_browser

    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def browser(chromium: Any) -> Iterator[Any]:
    """One page of it with its console errors, failed requests and dialogs (``test_browser.Browser``)."""
    from test_browser import Browser

    page = chromium.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(60_000)  # plotly.min.js takes seconds to parse on 2 busy cores
    yield Browser(page)
    page.close()
