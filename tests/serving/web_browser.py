"""Headless Debian chromium driven by selenium, for the web page test and the docs screenshot.

Why Debian's packages: no browser or driver download at run time (``chromium`` and
``chromium-driver`` from apt; selenium is told both paths so its driver manager stays offline).
"""

from __future__ import annotations

import shutil
from typing import Any


def chromium_paths() -> tuple[str, str] | None:
    """(browser, driver) paths, or None when Debian's chromium / chromium-driver are not installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def headless_chromium(browser: str, driver: str, width: int = 1280, height: int = 1100) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",  # tests run as root in containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        "--hide-scrollbars",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=opts, service=Service(executable_path=driver))


def wait_for(drv: Any, script: str, timeout: float = 20.0) -> Any:
    """Poll a JS expression until it is truthy; returns its value."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(drv, timeout, poll_frequency=0.05).until(lambda d: d.execute_script(script))


def images_loaded(drv: Any, container: str) -> list[bool]:
    """For each <img> in ``#container``: decoded with a non-zero width."""
    return drv.execute_script(
        "return [...document.querySelectorAll(arguments[0] + ' img')]"
        ".map(i => i.complete && i.naturalWidth > 0)",
        "#" + container,
    )


def severe_console_errors(drv: Any) -> list[str]:
    return [e["message"] for e in drv.get_log("browser") if e.get("level") == "SEVERE"]
