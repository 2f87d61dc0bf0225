"""quality_report.html in a REAL browser: Debian's headless Chromium driven by Selenium (chromium-driver).

The page loads from a file:// URL with no console error and no request but the file itself; every section
is displayed and holds an SVG chart with a nonzero rendered size; every data-key element's rendered text
is the JSON value at its path; the hostile model output in the sample rows shows as text and runs nothing.

Needs `chromium`, `chromedriver` and the `selenium` package: `bash scripts/install_browser.sh` installs
them (CI runs it). Away from CI a missing piece skips these tests; with CI=true it FAILS them, so a CI
run that lost its browser can never look green.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from sdg.output.html_report import SECTIONS, lookup, write_html_report
from tests.test_html_report import HOSTILE_LEAF, HOSTILE_QUESTION, HOSTILE_RESPONSE, build_report

HOW = "install it with `bash scripts/install_browser.sh` (CI does)"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _browser_problem() -> str | None:
    for exe in ("chromium", "chromedriver"):
        if shutil.which(exe) is None:
            return f"no `{exe}` on PATH: {HOW}"
    try:
        import selenium.webdriver  # noqa: F401
    except ImportError:
        return f"the selenium package is not installed in this environment: {HOW}"
    return None


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    problem = _browser_problem()
    if problem is not None:
        if _in_ci():
            pytest.fail(f"CI=true but the browser tests cannot run: {problem}", pytrace=False)
        pytest.skip(problem)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tmp_path_factory.mktemp("chromium-profile")
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")  # the Debian wrapper script (it adds its own flags)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--window-size=1280,2000", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-extensions", "--disable-default-apps", "--mute-audio",
                f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    # console messages (browser) and DevTools Network events (performance) come back through get_log
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # An explicit driver path: Selenium Manager (which would go online to look for one) is never asked.
    service = Service(executable_path=shutil.which("chromedriver"), log_output=subprocess.DEVNULL)
    drv = webdriver.Chrome(service=service, options=opts)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()


def _requests(drv: Any) -> list[str]:
    """URLs of the Network.requestWillBeSent events since the last call (the performance log drains)."""
    urls = []
    for entry in drv.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def _open(drv: Any, path: Path) -> tuple[list[str], list[dict]]:
    """Load a file; (the requests it made, the console entries it logged)."""
    _requests(drv)
    drv.get_log("browser")
    drv.get(path.as_uri())
    drv.execute_script("return document.readyState")
    return _requests(drv), drv.get_log("browser")


def test_network_and_console_monitors_see_what_a_page_does(driver: Any, tmp_path: Path) -> None:
    """A control: were the monitors blind, the real test below would pass for nothing."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><title>x</title></head><body>'
                   '<img src="http://127.0.0.1:9/pixel.png"><script>console.error("boom")</script></body></html>',
                   encoding="utf-8")
    requests, console = _open(driver, bad)
    assert bad.as_uri() in requests
    assert "http://127.0.0.1:9/pixel.png" in requests
    assert any(e["level"] == "SEVERE" and "boom" in e["message"] for e in console), console


def _check_page(driver: Any, report: dict, page: Path, *, min_keys: int) -> None:
    """Loads with nothing but itself, no console error, no script; every section shown with a chart of nonzero
    size; every data-key element's text is the JSON value at its path."""
    requests, console = _open(driver, page)

    # loads, requests nothing but itself, logs no error, runs no script of the rows
    assert driver.title == f"Quality report: {report['run']['run_dir']}"
    assert requests == [page.as_uri()], requests
    severe = [e for e in console if e["level"] == "SEVERE"]
    assert severe == [], severe
    assert driver.execute_script("return document.scripts.length") == 0

    # every section displayed, each with an svg chart of nonzero rendered size
    from selenium.webdriver.common.by import By

    sections = driver.find_elements(By.CSS_SELECTOR, "section[data-section]")
    assert [s.get_attribute("data-section") for s in sections] == list(SECTIONS)
    for section in sections:
        name = section.get_attribute("data-section")
        assert section.is_displayed(), name
        svgs = section.find_elements(By.TAG_NAME, "svg")
        assert svgs, name
        assert svgs[0].is_displayed(), name
        assert svgs[0].size["width"] > 0 and svgs[0].size["height"] > 0, (name, svgs[0].size)
    sizes = driver.execute_script(
        "return Array.from(document.querySelectorAll('section[data-section] svg'))"
        ".map(s => { const r = s.getBoundingClientRect(); return [r.width, r.height]; })")
    assert len(sizes) >= len(SECTIONS) and all(w > 0 and h > 0 for w, h in sizes), sizes

    # every data-key element shows exactly the JSON value at its path
    shown = driver.execute_script(
        "return Array.from(document.querySelectorAll('[data-key]')).map(e => [e.dataset.key, e.innerText])")
    assert len(shown) > min_keys
    for key, text in shown:
        value = lookup(report, key)
        assert text == json.dumps(value), (key, text, value)
        assert float(text) == value
    keys = {k for k, _ in shown}
    assert {"run.kept", "run.target", "run.tokens_per_kept", "run.kept_per_1k_tokens", "run.elapsed_s"} <= keys
    assert {f"leaves.{lid}.kept" for lid in report["leaves"]} <= keys


def test_report_page_in_a_real_browser(driver: Any, tmp_path: Path) -> None:
    report = build_report()
    (tmp_path / "quality_report.json").write_text(json.dumps(report), encoding="utf-8")
    page = write_html_report(tmp_path)
    _check_page(driver, report, page, min_keys=100)
    from selenium.webdriver.common.by import By

    # the leaves' blocks, and the hostile rows shown as text
    leaves = driver.execute_script(
        "return Array.from(document.querySelectorAll('[data-section=\"samples\"] [data-leaf]')).map(e => e.dataset.leaf)")
    assert sorted(leaves) == sorted(report["leaves"]) and HOSTILE_LEAF in leaves
    body = driver.find_element(By.TAG_NAME, "body").text
    assert HOSTILE_RESPONSE.split("<img")[0] in body and "<iframe" in body
    assert HOSTILE_QUESTION in driver.execute_script("return document.body.textContent")
    assert driver.execute_script("return document.querySelectorAll('iframe, img, object, embed').length") == 0


def test_the_report_of_a_real_run_in_a_real_browser(driver: Any, tmp_path: Path) -> None:
    """A real generate (full pipeline, every leaf kind, the deterministic stand-in teacher over real HTTP, so
    judges pass and drop rows) writes a report whose page passes the same checks against its own JSON."""
    from sdg.config.compose import compose_config, to_object
    from sdg.run import generate
    from sdg.taxonomy.init import init_taxonomy
    from tests.standin_teacher import DeterministicStandInTeacher

    taxonomy = init_taxonomy(tmp_path / "taxonomy").path
    with DeterministicStandInTeacher() as url:
        cfg = to_object(compose_config([f"taxonomy.path={taxonomy}", "pipeline=full", "pipeline.sdg_scale_factor=2",
                                        "taxonomy.documents.chunk_tokens=4000", "teacher=endpoint",
                                        f"teacher.endpoint_url={url}", f"generate.output_dir={tmp_path / 'out'}",
                                        "generate.progress=none"]))
        result = generate(cfg, log=lambda m: None)
    assert result.run_dir is not None
    report = json.loads((result.run_dir / "quality_report.json").read_text())
    assert report["run"]["kept"] > 0 and len(report["leaves"]) == 4
    _check_page(driver, report, result.run_dir / "quality_report.html", min_keys=40)
