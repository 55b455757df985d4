"""The browser and the webhook emulator that every browser test shares."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_octorpa.emulator import OctoRpaEmulator
from tests.support.services import ensure_installed

CJK_FONT = "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"


@pytest.fixture(scope="session")
def chromium() -> str:
    impossible = ensure_installed({"chromium": "chromium", CJK_FONT: "fonts-wqy-zenhei"})
    if impossible is not None:
        pytest.skip(f"Chromium or the CJK font cannot be installed here: {impossible}")
    pytest.importorskip("playwright", reason="Playwright's Python package is not installed (the 'ui' extra)")
    return shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser(chromium: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def emulator() -> Iterator[OctoRpaEmulator]:
    with OctoRpaEmulator() as emulator:
        yield emulator
