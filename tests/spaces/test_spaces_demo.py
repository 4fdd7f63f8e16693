"""The Spaces demo (spaces/app.py) end to end in a real browser: headless Debian Chromium driven by
chromedriver through Selenium, against the app served on 127.0.0.1.

Needs the ``demo`` extra (gradio) and selenium, and /usr/bin/chromium + /usr/bin/chromedriver (Debian's
chromium and chromium-driver, which .ci/run installs). Elsewhere the test is skipped with the reason;
under CI (``CI`` set) a missing piece is a failure. The screenshot is saved to outputs/spaces_demo.png.
"""

import importlib.util
import io
import os
import shutil
import socket
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import hf_vtok

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO_ROOT / "outputs" / "spaces_demo.png"
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
)  # fmt: skip

pytestmark = pytest.mark.slow


def _missing() -> str | None:
    for module, extra in (("gradio", "pip install -e '.[demo]'"), ("selenium", "pip install -e '.[test]'")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed ({extra})"
    for program in ("chromium", "chromedriver"):
        if shutil.which(program) is None:
            return f"{program} is not installed (apt-get install chromium chromium-driver)"
    return None


@pytest.fixture(scope="module")
def requirements():
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test must run in CI: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def app(requirements):
    spec = importlib.util.spec_from_file_location("hf_vtok_spaces_app", REPO_ROOT / "spaces" / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tokenizer_folder():
    """The small ViTok embedded in hf_vtok: what ``python spaces/app.py`` runs on, with no download."""
    from hf_vtok.commands.reconstruct import default_model_path

    return default_model_path()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_reconstruction_functions(app, tokenizer_folder):
    tokenizers = app.load_tokenizers({"default": str(tokenizer_folder)})
    config = tokenizers["default"].model.config
    image = app.prepare(Image.open(app.EXAMPLES[0]))
    framed, reconstruction, row = app.reconstruct_one(tokenizers["default"], image)
    assert reconstruction.size == framed.size == image.size and max(image.size) == app.MAX_SIDE
    tokens = -(-image.width // config.patch_size) * -(-image.height // config.patch_size)
    assert row[:3] == ["default", f"{image.width}x{image.height}", tokens]
    bits = tokens * config.latent_channels * app.CONTINUOUS_BITS / (image.width * image.height)
    assert row[3] == pytest.approx(bits, abs=1e-4)
    assert row[4] > 20 and 0.5 < row[5] <= 1  # the trained default model reconstructs photographs


def test_generation_tab_functions(app, tokenizer_folder, tmp_path):
    tokenizer = hf_vtok.ViTokModel.from_pretrained(tokenizer_folder)
    transformer = hf_vtok.ViTokDiTTransformerModel(
        in_channels=tokenizer.config.latent_channels,
        hidden_size=32,
        num_layers=1,
        num_attention_heads=2,
        num_tokens=16,
        num_classes=10,
    )
    hf_vtok.ViTokDiTPipeline.from_components(transformer, tokenizer).save_pretrained(tmp_path / "pipeline")
    pipelines = app.load_pipelines({"tiny": str(tmp_path / "pipeline")})
    sample = app.generate_sample(pipelines["tiny"], 3, steps=2, guidance_scale=1.5, seed=0)
    side = 4 * tokenizer.config.patch_size  # a 4 x 4 token grid
    assert isinstance(sample, Image.Image) and sample.size == (side, side)
    assert np.array_equal(np.asarray(sample), np.asarray(app.generate_sample(pipelines["tiny"], 3, 2, 1.5, 0)))
    with pytest.raises(app.gr.Error, match="class id must be in 0..9"):
        app.generate_sample(pipelines["tiny"], 10, 2, 1.5, 0)
    app.build_demo(app.load_tokenizers({"tiny": str(tokenizer_folder)}), pipelines)  # both tabs build


def test_demo_in_headless_chromium(app, tokenizer_folder, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as conditions
    from selenium.webdriver.support.ui import WebDriverWait

    tokenizers = app.load_tokenizers({"default ViTok": str(tokenizer_folder)})
    demo = app.build_demo(tokenizers)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        url = f"http://127.0.0.1:{port}/"
        driver.get(url)
        wait = WebDriverWait(driver, 60)
        upload = wait.until(conditions.presence_of_element_located((By.CSS_SELECTOR, "#input-image input[type=file]")))
        photo = Path(app.EXAMPLES[0])
        upload.send_keys(str(photo))
        wait.until(conditions.presence_of_element_located((By.CSS_SELECTOR, "#input-image img")))
        driver.find_element(By.CSS_SELECTOR, "#reconstruct-button").click()
        wait.until(lambda browser: "default ViTok" in browser.find_element(By.CSS_SELECTOR, "#metrics").text)
        wait.until(lambda browser: len(browser.find_elements(By.CSS_SELECTOR, "#reconstructions img")) >= 2)
        time.sleep(1)  # let the thumbnails paint before the screenshot
        SCREENSHOT.parent.mkdir(exist_ok=True)
        driver.save_screenshot(str(SCREENSHOT))

        # the reconstruction the page shows is the model's, pixel for pixel
        expected_framed, expected, row = app.reconstruct_one(
            tokenizers["default ViTok"], app.prepare(Image.open(photo))
        )
        sources = [
            element.get_attribute("src") for element in driver.find_elements(By.CSS_SELECTOR, "#reconstructions img")
        ]
        shown = [
            Image.open(io.BytesIO(urllib.request.urlopen(source, timeout=30).read())).convert("RGB")
            for source in sources
        ]
        reconstructions = [
            image for image in shown if not np.array_equal(np.asarray(image), np.asarray(expected_framed))
        ]
        assert reconstructions and np.array_equal(np.asarray(reconstructions[0]), np.asarray(expected))
        table = driver.find_element(By.CSS_SELECTOR, "#metrics").text
        assert str(row[2]) in table and f"{row[4]}" in table
    finally:
        driver.quit()
        demo.close()
    assert SCREENSHOT.stat().st_size > 10_000
