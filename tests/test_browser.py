"""MLflow's UI on a finished smoke sweep, in headless Chromium driven by Selenium: the ``mlflow ui`` command and the
page the sweep prints open the experiment on its training runs, the parent run shows the answer as its description, and a child
run shows its params and its plot. Screenshots of each page are kept in ``$MKE_TEST_ARTIFACTS/browser`` (else
``test-artifacts/browser`` in the checkout).

Needs Debian's ``chromium`` and ``chromium-driver`` (.ci/run installs them); nothing is downloaded at run time.

MLflow 3's UI picks an experiment's layout from the "GenAI / Model training" switch at the top left (kept in the
browser, GenAI at first), not from the experiment's ``mlflow.experimentKind`` tag: the pages are opened with
``?workflowType=machine_learning``, which is what that switch sets (and what the sweep's last line says to open)."""

import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from mke_ray.report.answer import SMOKE_NOTE
from tests.conftest import ROOT
from tests.servers import mlflow_server

pytestmark = [pytest.mark.browser, pytest.mark.infra]

SHOTS = Path(os.environ.get("MKE_TEST_ARTIFACTS") or ROOT / "test-artifacts") / "browser"
TRAINING = "?workflowType=machine_learning"
WAIT = 60  # seconds for a page to show what is asked (2 busy cores load MLflow's JavaScript slowly)


@pytest.fixture(scope="module", autouse=True)
def chromium() -> tuple[str, str]:
    """The paths of Debian's chromium and chromedriver; without them the tests fail at once, saying what to do."""
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if not all(found):
        pytest.fail("no chromium/chromedriver: apt-get install chromium chromium-driver", pytrace=False)
    return found


@pytest.fixture(scope="module")
def sweep(smoke_sweep):
    """The run's finished smoke sweep (``conftest.smoke_sweep``): its tracking URI, what it printed, its experiment id,
    its parent run, its child runs and one of them, a regularized MM student."""
    assert smoke_sweep.code == 0
    recorder = smoke_sweep.recorder
    (parent,) = recorder.client.search_runs([recorder.experiment_id], "tags.`mke.kind` = 'sweep'")
    children = [recorder.client.get_run(r) for r in recorder.children(parent.info.run_id).values()]
    child = next(c for c in children if c.data.params.get("method") == "mm_student"
                 and c.data.params["regularizer"] != "none")
    return SimpleNamespace(uri=smoke_sweep.uri, printed=smoke_sweep.printed, experiment=recorder.experiment_id,
                           parent=parent, children=children, child=child)


@pytest.fixture(scope="module")
def ui(sweep, tmp_path_factory):
    """The UI of the command the sweep prints (run elsewhere than the database, so artifacts are found by their
    URIs); yields its address."""
    assert f"compare runs: mlflow ui --backend-store-uri {sweep.uri}  (parent run " in sweep.printed
    with mlflow_server(sweep.uri, None, command="ui", cwd=tmp_path_factory.mktemp("elsewhere")) as address:
        yield address


@pytest.fixture(scope="module")
def printed_page(sweep) -> str:
    """The page the sweep's last line says to open, without its host (the test's UI has a port of its own)."""
    (page,) = re.findall(r"then open http://127\.0\.0\.1:5000/(\S+)", sweep.printed)
    return page


@pytest.fixture(scope="module")
def browser(chromium, ui):
    """Headless Chromium, 1600x1000, without MLflow's assistant panel (it takes a third of the page)."""
    chromium, chromedriver = chromium
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        options.add_argument(arg)
    with pytest.MonkeyPatch.context() as env:  # both paths given: Selenium Manager is not run, and offline if it were
        env.setenv("SE_OFFLINE", "true")
        driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    try:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 1600, "height": 1000, "deviceScaleFactor": 1, "mobile": False})
        driver.get(f"{ui}/health")  # the UI's origin, to set what its assistant reads on first load
        driver.execute_script("localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
                              "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');")
        SHOTS.mkdir(parents=True, exist_ok=True)
        yield driver
    finally:
        driver.quit()


def visible(driver, xpath: str, what: str):
    """Wait for a visible element matching ``xpath``, scroll it into view, return it."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    found = WebDriverWait(driver, WAIT, ignored_exceptions=[StaleElementReferenceException]).until(
        lambda d: next((e for e in d.find_elements("xpath", xpath) if e.is_displayed()), False),
        f"{what} not shown on {driver.current_url}")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", found)
    return found


def visible_text(driver, text: str):
    """The deepest visible element that holds ``text``."""
    assert "'" not in text
    has = f"contains(normalize-space(.), '{text}')"
    return visible(driver, f"//body//*[{has}][not(*[{has}])]", repr(text))


def shot(driver, name: str) -> None:
    path = SHOTS / f"{name}.png"
    assert driver.save_screenshot(str(path)), path


def test_the_experiment_opens_on_its_training_runs(sweep, ui, browser, printed_page):
    experiment, parent, child = sweep.experiment, sweep.parent, sweep.child
    assert printed_page == f"#/experiments/{experiment}/runs{TRAINING}"
    browser.get(f"{ui}/{printed_page}")  # what the sweep's last line says to open
    visible_text(browser, parent.info.run_name)
    assert re.search(rf"#/experiments/{experiment}/runs\b", browser.current_url), browser.current_url
    visible_text(browser, "14 matching runs")  # the parent, the teacher and 12 students
    visible_text(browser, parent.info.run_name).find_element(  # expand the parent: its child runs
        "xpath", "./ancestor::*[@role='row'][1]//button").click()
    visible_text(browser, child.info.run_name)
    visible_text(browser, "Smoke runs (--smoke-test)")  # the experiment's description
    assert "Detect Issues" not in browser.page_source  # not GenAI's overview of traces
    shot(browser, "1-experiment-runs")


def test_the_parent_run_shows_the_answer(sweep, ui, browser):
    parent = sweep.parent
    browser.get(f"{ui}/#/experiments/{sweep.experiment}/runs/{parent.info.run_id}{TRAINING}")
    named = " or ".join(f"normalize-space()='{c.info.run_name}'" for c in sweep.children)
    visible(browser, f"//body//*[{named}][not(*[{named}])]", "a child run")  # the first of its child runs listed
    note = parent.data.tags["mlflow.note.content"]
    answer = next(line for line in note.splitlines() if line.startswith("**Answer:**")).replace("**", "")
    visible_text(browser, SMOKE_NOTE)
    visible_text(browser, answer)
    shot(browser, "2-parent-run-answer")


def test_a_child_run_shows_its_params_and_plot(sweep, ui, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    child = sweep.child
    browser.get(f"{ui}/#/experiments/{sweep.experiment}/runs/{child.info.run_id}{TRAINING}")
    visible_text(browser, child.info.run_name)
    for name in ("column", "strength", "regularizer"):  # a row of the Parameters table: name, value
        value = child.data.params[name]
        visible(browser, f"//*[@role='row'][*[1][normalize-space()='{name}']][*[2][normalize-space()='{value}']]",
                f"param {name} = {value}")
    shot(browser, "3-child-run-params")

    visible(browser, "//*[@role='tab'][normalize-space()='Artifacts']", "the Artifacts tab").click()
    visible(browser, "//*[normalize-space()='boundary.png'][not(*[normalize-space()='boundary.png'])]",
            "boundary.png in the artifacts").click()
    image = WebDriverWait(browser, WAIT).until(
        lambda d: next((i for i in d.find_elements(By.XPATH, "//img[@alt='boundary.png']")
                        if d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i)),
                       False), "boundary.png is not drawn")
    assert image.size["width"] > 300 and image.size["height"] > 200, image.size
    shot(browser, "4-child-run-boundary")
