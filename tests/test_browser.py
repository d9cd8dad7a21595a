"""The app in a real browser (Playwright driving Debian's chromium): every tab, a tiny 1-iteration run with its
curve, the Compare view, a tiny world evaluation with its chart. Screenshots go to test-artifacts/."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import app
from silmm.adapters import ADAPTERS
from silmm.app_backend import Backend

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic", "--no-first-run",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]  # fmt: skip

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).is_file(), reason="chromium not installed: apt-get install chromium"
    ),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    model = "world-discrete"
    if not (Path(ADAPTERS[model][2]) / "model.safetensors").is_file():
        model = str(tmp_path_factory.mktemp("world") / "wd")
        cmd = [sys.executable, "-m", "silmm.world.train", "--kind", "discrete", "--out", model, "--steps", "30",
               "--hidden", "64", "--layers", "2"]  # fmt: skip
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    demo = app.create_demo(model, backend=Backend(model, runs_dir=tmp_path_factory.mktemp("runs")))
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True, **app.LAUNCH)  # fmt: skip
    yield url, model
    demo.close()


def test_every_tab_run_compare_evaluate(served):
    url, model = served
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(60_000)
        page.goto(url, wait_until="domcontentloaded")
        page.wait_for_selector("#g-prompt textarea")
        shot = lambda name: page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)  # noqa: E731

        # 1. generate & inspect
        page.locator("#g-prompt textarea").fill("a red circle to the left of a blue square")
        page.get_by_role("button", name="Generate", exact=True).click()
        page.wait_for_selector("#g-gallery img")
        page.get_by_text("score", exact=False).first.wait_for()
        assert page.locator("#g-gallery img").count() >= 4
        shot("01-generate")
        page.locator("#g-prompt textarea").fill("a red blorp")
        page.get_by_role("button", name="Generate", exact=True).click()
        page.get_by_text("unknown word 'blorp'", exact=False).first.wait_for()
        page.wait_for_timeout(800)  # the toast fades in
        shot("01b-generate-error")

        # 2. self-improve: a tiny 1-iteration run, its curve and log
        page.get_by_role("tab", name="Self-improve").click()
        page.locator("#s-name textarea").fill("browser-run")
        for elem, value in (("s-per", "2"), ("s-n", "2"), ("s-gap", "0")):
            page.locator(f"#{elem} input").fill(value)
        page.locator("#s-questions").get_by_text("gt", exact=True).click()
        page.get_by_role("button", name="Start", exact=True).click()
        page.locator("#s-status").get_by_text("done", exact=False).wait_for(timeout=120_000)
        page.wait_for_selector("#s-plot .js-plotly-plot")
        assert "finished" in page.locator("#s-stages").inner_text()
        shot("02-self-improve")

        # 3. compare: the run's iteration 1 before and after
        page.get_by_role("tab", name="Compare").click()
        page.locator("#c-run input").fill("browser-run")
        page.locator("#c-run input").press("Enter")
        page.wait_for_function("document.querySelector('#c-run input').value === 'browser-run'")
        page.wait_for_timeout(1500)  # the iteration dropdown follows the run
        page.get_by_role("button", name="Compare", exact=True).click()
        page.wait_for_selector("#c-html .silmm-cmp img")
        assert page.locator("#c-html .silmm-cmp").count() >= 1
        shot("03-compare")

        # 4. evaluate: a tiny world evaluation and its chart
        page.get_by_role("tab", name="Evaluate").click()
        page.locator("#e-limit input").fill("2")
        page.locator("#e-ipp input").fill("1")
        page.get_by_role("button", name="Evaluate", exact=True).click()
        page.locator("#e-summary").get_by_text("overall", exact=False).wait_for(timeout=120_000)
        page.wait_for_selector("#e-plot .js-plotly-plot")
        shot("04-evaluate")
        # the same for the run's iteration 1, then both saved results overlaid (base vs iteration 1)
        page.locator("#e-adapter input").fill("browser-run/iter_1")
        page.locator("#e-adapter input").press("Enter")
        page.get_by_role("button", name="Evaluate", exact=True).click()
        page.locator("#e-summary").get_by_text("browser-run-iter_1", exact=False).wait_for(timeout=120_000)
        for key in ("world/browser-run-iter_1", f"world/{Path(model).name}"):
            page.locator("#e-saved input").fill(key)
            page.locator("#e-saved input").press("Enter")
        page.get_by_role("button", name="Overlay", exact=True).click()
        page.wait_for_function(
            "document.querySelectorAll('#e-plot .js-plotly-plot g.trace.bars').length === 2"
        )
        shot("04b-evaluate-overlay")

        # 5. runs: the run is listed and opens in Compare
        page.get_by_role("tab", name="Runs").click()
        page.get_by_role("button", name="Refresh").click()
        page.wait_for_function("document.querySelector('#r-table').innerText.includes('browser-run')")
        idle = "['#r-table', '#r-run'].every(id => document.querySelector(id + ' [data-testid=status-tracker]').classList.contains('hide'))"
        page.wait_for_function(idle)
        page.wait_for_timeout(500)
        shot("05-runs")
        page.locator("#r-run input").fill("browser-run")
        page.locator("#r-run input").press("Enter")
        page.get_by_role("button", name="Open in Compare").click()
        page.wait_for_selector("#c-run input")
        assert page.locator("#c-run input").input_value() == "browser-run"
        browser.close()
