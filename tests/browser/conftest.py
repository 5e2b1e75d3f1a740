"""Headless Chromium (Debian's chromium + chromium-driver) driven by Selenium against the local runner.

The runner is the contract suite's session fixture, reused as is. No browser or driver is
downloaded: both paths are given explicitly, so Selenium Manager never runs.
`make test` and `make screenshots` install the two packages when they are missing.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.contract.conftest import KEYS, runner  # noqa: F401  (the session fixture, reused)

CHROMIUM = os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "functions" / "dashboard" / "static" / "vendor" / "uPlot.iife.min.js"

# Figures measured by the tests (first paint, page size), printed at the end of the run.
MEASURED: dict[str, str] = {}


@pytest.fixture(scope="session")
def browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        # `make test` installs them, so under make (and in CI) their absence is a failure.
        missing = f"{CHROMIUM} / {CHROMEDRIVER} missing: `make test` installs chromium and chromium-driver"
        if os.environ.get("CI") or os.environ.get("MAKELEVEL"):
            pytest.fail(missing)
        pytest.skip(missing)
    if not VENDOR.exists():
        pytest.fail("the dashboard's chart library is missing: run `make dashboard-assets`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="dashboard-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--lang=en-US",
        "--window-size=1280,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> Path:
    """docs/screenshots when DASHBOARD_SCREENSHOTS is set (`make screenshots`), else a temp folder."""
    target = os.environ.get("DASHBOARD_SCREENSHOTS")
    folder = (ROOT / target) if target else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def pytest_terminal_summary(terminalreporter):
    if MEASURED:
        terminalreporter.section("dashboard measurements")
        for name, value in MEASURED.items():
            terminalreporter.write_line(f"{name}: {value}")
