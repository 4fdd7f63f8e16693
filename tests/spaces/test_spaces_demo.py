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
from hf_vtok.utils.images import adm_center_crop

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


def example(name: str) -> str:
    """A bundled photo of the demo by name (``chelsea``: 256x170, landscape)."""
    return str(REPO_ROOT / "spaces" / "examples" / f"{name}.jpg")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def fixed_size_folder(tmp_path_factory):
    """A 16x16-pixel SoftVQ-VAE (random weights) and its processor: a fixed-size tokenizer, center crop included."""
    from tests.testing_utils.tiny_models import tiny_pipeline_tokenizer

    folder = tmp_path_factory.mktemp("softvq")
    model = tiny_pipeline_tokenizer()
    model.save_pretrained(folder)
    hf_vtok.LatentTokenImageProcessor.for_model(model.config).save_pretrained(folder)
    return folder


def test_prepare_says_when_an_upload_was_resized(app):
    image, notice = app.prepare(Image.new("RGB", (600, 400), "red"))
    assert image.size == (256, 171) and "600x400" in notice and "downscaled to 256x171" in notice
    image, notice = app.prepare(Image.new("RGB", (600, 400)), max_side=1000)
    assert image.size == (600, 400) and "own size, 600x400" in notice


def test_each_tokenizer_shows_what_it_saw(app, tokenizer_folder, fixed_size_folder):
    tokenizers = app.load_tokenizers({"default": str(tokenizer_folder), "fixed": str(fixed_size_folder)})
    image, _ = app.prepare(Image.open(example("chelsea")))
    assert image.height < image.width  # a landscape photo: a square crop differs from it

    # NaFlex: the whole image at its own aspect, and its reconstruction at that size
    config = tokenizers["default"].model.config
    result = app.reconstruct_one(tokenizers["default"], image)
    assert result.seen.size == result.reconstruction.size == result.error_map.size == image.size
    assert np.abs(np.asarray(result.seen, np.int16) - np.asarray(image)).max() <= 1  # the input, back from [-1, 1]
    tokens = -(-image.width // config.patch_size) * -(-image.height // config.patch_size)
    assert result.row[:3] == ["default", f"{image.width}x{image.height}", tokens]
    bits = tokens * config.latent_channels * app.CONTINUOUS_BITS / (image.width * image.height)
    assert result.row[3] == pytest.approx(bits, abs=1e-4)
    assert result.row[4] > 20 and 0.5 < result.row[5] <= 1  # the trained default model reconstructs photographs
    assert app.framing(result.seen, image) == "the whole input, at its own size"

    # a fixed-size tokenizer saw its processor's center crop, not the whole image
    fixed = app.reconstruct_one(tokenizers["fixed"], image)
    crop = adm_center_crop(image, 16)
    assert fixed.seen.size == fixed.reconstruction.size == (16, 16) and fixed.row[1] == "16x16"
    assert np.abs(np.asarray(fixed.seen, np.int16) - np.asarray(crop)).max() <= 1
    assert app.framing(fixed.seen, image).startswith("a center crop")
    shown = app.for_display(fixed.seen)  # enlarged with whole pixels
    assert shown.size == (256, 256) and np.array_equal(
        np.asarray(shown), np.asarray(fixed.seen).repeat(16, axis=0).repeat(16, axis=1)
    )


def test_error_map_is_a_heat_map_of_the_per_pixel_error(app):
    seen = Image.fromarray(np.full((2, 3, 3), 100, np.uint8))
    error = np.zeros((2, 3, 3), np.int16)
    error[0, 1] = 64  # at full scale
    error[1, 2] = 16  # a quarter of it
    heat = np.asarray(app.error_heatmap(seen, Image.fromarray((100 + error).astype(np.uint8))))
    assert heat.shape == (2, 3, 3) and (heat[1, :2] == 0).all() and (heat[0, 0] == 0).all()
    assert heat[0, 1].tolist() == app.HEAT_COLOURS[-1].tolist() and heat[1, 2].tolist() == app.HEAT_COLOURS[1].tolist()


def test_generation_tab_picks_classes_by_name(app, tokenizer_folder, tmp_path):
    from hf_vtok.cli import main as hf_vtok_main
    from hf_vtok.commands.generate import default_pipeline_path

    # the embedded digits SiT, as `hf-vtok generate` uses it: classes "0".."9", the same images per seed
    digits = app.load_pipelines({"digits": default_pipeline_path()})["digits"]
    assert digits.choices == [(str(k), k) for k in range(10)] and app.default_class(digits) == 0
    assert digits.defaults == {"num_inference_steps": 50, "guidance_scale": 1.5}  # its sampling.json
    samples = app.generate_samples(digits, 3, num_images=2, steps=4, guidance_scale=1.5, seed=5)
    hf_vtok_main(["generate", "--class", "3", "--num-images", "2", "--seed", "5", "--num-inference-steps", "4",
                  "--out", str(tmp_path / "cli")])  # fmt: skip
    for index, sample in enumerate(samples):
        assert np.array_equal(np.asarray(sample), np.asarray(Image.open(tmp_path / "cli" / f"class3_00{index}.png")))
    assert app.for_display(samples[0]).size == (256, 256)  # 32x32 digits shown 8x, nearest neighbour
    with pytest.raises(app.gr.Error, match="class id must be in 0..9"):
        app.generate_samples(digits, 10, 1, 2, 1.5, 0)

    # an ImageNet pipeline (1000 classes) gets ImageNet's names; a pipeline's own id2label comes first
    from tests.testing_utils.tiny_models import TINY_PIPELINE_1D, randomize, tiny_pipeline_tokenizer

    transformer = randomize(hf_vtok.SiTTransformer1DModel(**{**TINY_PIPELINE_1D, "num_classes": 1000}))
    pipe = hf_vtok.SiTPipeline(tiny_pipeline_tokenizer(), transformer, hf_vtok.SiTFlowScheduler())
    pipe.save_pretrained(tmp_path / "imagenet")
    imagenet = app.load_pipelines({"imagenet": str(tmp_path / "imagenet")})["imagenet"]
    names = app.imagenet_class_names()
    assert names is not None and len(names) == 1000 and "retriever" in names[207].lower()
    assert imagenet.choices[207] == (f"207: {names[207]}", 207) and app.default_class(imagenet) == 207
    pipe.register_to_config(id2label={str(k): f"kind {k}" for k in range(1000)})
    assert app.class_names(pipe)[5] == "kind 5"
    app.build_demo(app.load_tokenizers({"default": str(tokenizer_folder)}), {"digits": digits, "imagenet": imagenet})


def fetch_image(source: str) -> Image.Image:
    return Image.open(io.BytesIO(urllib.request.urlopen(source, timeout=30).read())).convert("RGB")


def shown_images(driver, selector: str) -> list[Image.Image]:
    """The images the page shows under ``selector``, as the server sent them."""
    from selenium.webdriver.common.by import By

    return [fetch_image(element.get_attribute("src")) for element in driver.find_elements(By.CSS_SELECTOR, selector)]


def same(first: Image.Image, second: Image.Image) -> bool:
    return np.array_equal(np.asarray(first), np.asarray(second))


def drive_demo(url: str, profile: Path, app, tokenizer, generator, screenshot: Path = SCREENSHOT) -> None:
    """Use the demo at ``url`` as a person would in headless Chromium: reconstruct a landscape photo, then
    generate a class chosen by name; what the page shows must be the app functions' output, pixel for pixel."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as conditions
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 120)
        upload = wait.until(conditions.presence_of_element_located((By.CSS_SELECTOR, "#input-image input[type=file]")))
        upload.send_keys(example("chelsea"))
        wait.until(conditions.presence_of_element_located((By.CSS_SELECTOR, "#input-image img")))
        driver.find_element(By.CSS_SELECTOR, "#reconstruct-button").click()
        wait.until(lambda browser: tokenizer.name in browser.find_element(By.CSS_SELECTOR, "#metrics").text)
        wait.until(lambda browser: len(browser.find_elements(By.CSS_SELECTOR, "#comparison-0 img")) == 2)
        time.sleep(1)  # let the images paint before the screenshot
        screenshot.parent.mkdir(exist_ok=True)
        driver.save_screenshot(str(screenshot))

        image, notice = app.prepare(Image.open(example("chelsea")))
        expected = app.reconstruct_one(tokenizer, image)
        assert driver.find_element(By.CSS_SELECTOR, "#resize-notice").text == notice
        assert (
            f"saw {image.width}x{image.height}: the whole input"
            in driver.find_element(By.CSS_SELECTOR, "#caption-0").text
        )
        seen, reconstruction = shown_images(driver, "#comparison-0 img")  # the slider: before | after
        assert same(seen, expected.seen) and same(reconstruction, expected.reconstruction)
        assert seen.size == image.size  # at the photo's own aspect, not a square tile
        (error_map,) = shown_images(driver, "#error-0 img")
        assert same(error_map, expected.error_map)
        table = driver.find_element(By.CSS_SELECTOR, "#metrics").text
        assert str(expected.row[2]) in table and f"{expected.row[4]}" in table

        tab = [
            button for button in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]") if button.text == "Generate"
        ]
        tab[0].click()
        wait.until(lambda browser: browser.find_element(By.CSS_SELECTOR, "#class-name input").is_displayed())
        driver.find_element(By.CSS_SELECTOR, "#class-name input").click()
        wait.until(
            lambda browser: [o for o in browser.find_elements(By.CSS_SELECTOR, "[role=option]") if o.text == "7"]
        )
        [option for option in driver.find_elements(By.CSS_SELECTOR, "[role=option]") if option.text == "7"][0].click()
        driver.find_element(By.CSS_SELECTOR, "#generate-button").click()
        wait.until(lambda browser: len(browser.find_elements(By.CSS_SELECTOR, "#samples img")) == 8)
        time.sleep(1)
        driver.save_screenshot(str(screenshot.with_name(screenshot.stem + "_generate.png")))
        first = shown_images(driver, "#samples img")[0]
        steps, guidance = generator.defaults["num_inference_steps"], generator.defaults["guidance_scale"]
        (sample,) = app.generate_samples(generator, 7, 1, steps, guidance, 0)
        assert first.size == (256, 256) and same(first, app.for_display(sample))  # 32x32 digits shown 8x
        assert "7, seed 0" in driver.find_element(By.CSS_SELECTOR, "#samples").text
    finally:
        driver.quit()
    assert screenshot.stat().st_size > 10_000


def test_demo_in_headless_chromium(app, tokenizer_folder, tmp_path):
    from hf_vtok.commands.generate import default_pipeline_path

    tokenizers = app.load_tokenizers({"default ViTok": str(tokenizer_folder)})
    generators = app.load_pipelines({"digits": default_pipeline_path()})
    demo = app.build_demo(tokenizers, generators)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        drive_demo(
            f"http://127.0.0.1:{port}/", tmp_path / "profile", app, tokenizers["default ViTok"], generators["digits"]
        )
    finally:
        demo.close()
