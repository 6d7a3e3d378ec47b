"""Fixtures for sharding tests: a headless Debian Chromium driven by Playwright."""

from __future__ import annotations

import os

import pytest

CHROMIUM = "/usr/bin/chromium"
# No sandbox (we may run as root in a container), no GPU, and nothing that phones home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium (Debian's package, installed by `make test`; never a downloaded one)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package "
                    "(apt-get install chromium) where apt-get can run as root")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()
