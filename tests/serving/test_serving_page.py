"""The serving page (`/`) in headless Chromium: upload, predict, explain, errors.

Needs Debian's `chromium` and `chromium-driver` packages (.ci/run installs
them); the test fails, rather than skips, without them.
"""

import json
import os
import urllib.request

import numpy as np
import PIL.Image
import pytest

from keras_robust.export import read_card
from keras_robust.export.card import ATTRIBUTION_METHODS

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-extensions", "--no-first-run",
)


@pytest.fixture(scope="module")
def browser():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    if missing:
        pytest.fail(
            f"The page test drives Debian's Chromium; missing {', '.join(missing)} "
            "(apt-get install chromium chromium-driver)."
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def post(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def canvas_pixels(driver, element_id):
    """The canvas's own pixels `(H, W, 4)` (not its scaled-up display)."""
    data = driver.execute_script(
        "const c = document.getElementById(arguments[0]);"
        "return [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)];",
        element_id,
    )
    width, height, values = data
    return np.array(values, np.uint8).reshape(height, width, 4)


def synthetic_png(path):
    """A 48×40 picture of gradients and noise (no dataset image), not the model's size."""
    y, x = np.mgrid[0:40, 0:48]
    noise = np.random.default_rng(5).integers(0, 60, (40, 48, 3))
    pixels = np.stack([x * 5, y * 6, (x + y) * 3], axis=-1) + noise
    PIL.Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    return path


def test_upload_predict_and_explain(browser, tiny_server, tiny_export, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    class_names = read_card(str(tiny_export[0] / tiny_export[1]))["class_names"]
    text = lambda element_id: browser.find_element(By.ID, element_id).text  # noqa: E731
    wait = WebDriverWait(browser, 60)
    browser.get(f"{tiny_server}/")
    target = Select(browser.find_element(By.ID, "target"))
    wait.until(lambda _: len(target.options) == len(class_names))
    assert [option.text for option in target.options] == class_names
    assert browser.find_element(By.ID, "explain").get_attribute("disabled") is not None

    # Upload: the page resizes the image to 32×32 and shows the prediction.
    browser.find_element(By.ID, "file").send_keys(str(synthetic_png(tmp_path / "upload.png")))
    wait.until(lambda _: text("prediction") or text("error"))
    assert text("error") == ""
    shown = canvas_pixels(browser, "input")
    assert shown.shape == (32, 32, 4) and shown[..., :3].std() > 10
    images = [(shown[..., :3] / np.float32(255)).tolist()]
    api = post(f"{tiny_server}/v1/models/tiny:predict", {"instances": images})["predictions"][0]
    top = class_names[api["classes"]]
    assert text("prediction") == f"{top} ({api['probabilities'][api['classes']]:.4f})"
    rows = browser.find_elements(By.CSS_SELECTOR, "#top5 tr")
    assert len(rows) == 5
    probabilities = [float(row.find_elements(By.TAG_NAME, "td")[1].text) for row in rows]
    assert probabilities == sorted(probabilities, reverse=True)
    assert rows[0].find_element(By.TAG_NAME, "td").text == top

    # Explain toward a class other than the prediction, with ρ moved by the keyboard.
    goal = next(name for name in reversed(class_names) if name != top)
    target.select_by_visible_text(goal)
    rho = browser.find_element(By.ID, "rho")
    assert text("rho-value") == "0.100"
    for _ in range(4):
        rho.send_keys(Keys.ARROW_RIGHT)
    assert text("rho-value") == "0.120"
    steps = browser.find_element(By.ID, "steps")
    steps.clear()
    steps.send_keys("20")
    browser.find_element(By.ID, "explain").click()
    wait.until(lambda _: text("confidence") or text("error"))
    assert text("error") == ""
    assert text("explain-target") == goal
    confidence = float(text("confidence"))
    assert 0 <= confidence <= 1
    instance = {"images": images[0], "targets": goal, "rho": float(rho.get_attribute("value")), "steps": 20}
    expected = post(f"{tiny_server}/v1/models/tiny:explain", {"instances": [instance]})["predictions"][0]
    assert confidence == pytest.approx(expected["target_confidence"], abs=1e-4)
    explanation = canvas_pixels(browser, "explanation")
    assert (explanation[..., 3] == 255).all() and explanation[..., :3].std() > 10
    clamped = np.clip(np.array(expected["explanations"]), 0, 1) * 255
    assert np.abs(explanation[..., :3] - clamped).max() <= 1
    heat = canvas_pixels(browser, "heatmap")
    assert (heat[..., 3] == 255).all() and heat[..., 0].max() == 255 and heat[..., :3].std() > 5
    assert expected["first_met_step"] >= 0  # 20 steps of the robust-ish tiny network reach ρ
    outcome = browser.find_element(By.ID, "explain-outcome")
    assert outcome.text.startswith(f"δ reached the budget ρ = {instance['rho']} at step "
                                   f"{expected['first_met_step']} of 20")
    verdict = "now gives" if expected["target_is_top"] else "does not give"
    assert f"The network {verdict} {goal} on x + δ" in outcome.text
    assert (outcome.get_attribute("class") == "failed") == (not expected["target_is_top"])

    # Each attribution method toward the same target, drawn beside the explanation: white where |attribution|
    # (averaged over channels) is largest.
    wait.until(lambda _: not text("status") or text("error"))
    assert text("error") == ""
    for method in ATTRIBUTION_METHODS:
        body = {"method": method, "instances": [{"images": images[0], "targets": goal}]}
        answer = np.array(post(f"{tiny_server}/v1/models/tiny:explain", body)["predictions"][0]["attributions"])
        magnitude = np.abs(answer).mean(axis=-1) if answer.ndim == 3 else answer
        drawn = canvas_pixels(browser, f"attribution-{method}")
        assert (drawn[..., 3] == 255).all() and drawn[..., :3].std() > 5, method
        assert tuple(drawn[np.unravel_index(magnitude.argmax(), magnitude.shape)][:3]) == (255, 255, 255), method

    # One step cannot reach the budget (step 0 begins at δ = 0): the page says so, in red.
    steps.clear()
    steps.send_keys("1")
    browser.find_element(By.ID, "explain").click()
    wait.until(lambda _: "never" in text("explain-outcome") or text("error"))
    wait.until(lambda _: not text("status") or text("error"))  # the attribution methods follow
    assert text("error") == ""
    assert text("explain-outcome").startswith(f"δ never reached the budget ρ = {instance['rho']} in 1 step:")
    assert outcome.get_attribute("class") == "failed"

    # A request the server refuses shows its error on the error line.
    steps.clear()
    steps.send_keys("100000")
    browser.find_element(By.ID, "explain").click()
    wait.until(lambda _: text("error"))
    assert "steps must be an integer in [1, 200]" in text("error")
    assert text("confidence") == ""

    # A file that is no image is refused by the page itself.
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    browser.find_element(By.ID, "file").send_keys(str(notes))
    wait.until(lambda _: "notes.png" in text("error"))
    assert "not an image" in text("error") and text("prediction") == ""
