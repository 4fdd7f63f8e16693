"""The Spaces demo (spaces/app.py): its functions in process, and the Space folder that spaces/build_space.py
assembles, started from a fresh virtual environment without hf_vtok and used end to end in a real browser
(headless Debian Chromium driven by chromedriver through Selenium, against the app served on 127.0.0.1).

Needs the ``demo`` extra (gradio) and selenium, and /usr/bin/chromium + /usr/bin/chromedriver (Debian's
chromium and chromium-driver, which .ci/run installs). Elsewhere the test is skipped with the reason;
under CI (``CI`` set) a missing piece is a failure. Screenshots: outputs/spaces_demo.png (Reconstruct) and
outputs/spaces_demo_generate.png (Generate).
"""

import argparse
import importlib.util
import io
import json
import os
import shutil
import site
import socket
import subprocess
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
def default_tokenizer(app):
    """The small ViTok embedded in hf_vtok, named as the demo names it: what ``python spaces/app.py`` runs on."""
    from hf_vtok.commands.reconstruct import default_model_path

    return app.load_tokenizers({app.DEFAULT_TOKENIZER: default_model_path()})[app.DEFAULT_TOKENIZER]


@pytest.fixture(scope="module")
def digits(app):
    """The digits SiT embedded in hf_vtok (what ``hf-vtok generate`` uses), as the demo loads it."""
    from hf_vtok.commands.generate import default_pipeline_path

    return app.load_pipelines({app.DEFAULT_PIPELINE: default_pipeline_path()})[app.DEFAULT_PIPELINE]


@pytest.fixture(scope="module")
def chelsea(app, default_tokenizer):
    """``(image, notice, round trip)`` of the bundled landscape photo through the default tokenizer."""
    image, notice = app.prepare(Image.open(example("chelsea")))
    return image, notice, app.reconstruct_one(default_tokenizer, image)


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


@pytest.mark.usefixtures("space_server")  # builds and starts the Space now: its start-up overlaps these tests
def test_prepare_says_when_an_upload_was_resized(app):
    image, notice = app.prepare(Image.new("RGB", (600, 400), "red"))
    assert image.size == (256, 171) and "600x400" in notice and "downscaled to 256x171" in notice
    image, notice = app.prepare(Image.new("RGB", (600, 400)), max_side=1000)
    assert image.size == (600, 400) and "own size, 600x400" in notice


def test_each_tokenizer_shows_what_it_saw(app, default_tokenizer, chelsea, fixed_size_folder):
    fixed_size = app.load_tokenizers({"fixed": str(fixed_size_folder)})["fixed"]
    image, _, result = chelsea
    assert image.height < image.width  # a landscape photo: a square crop differs from it

    # NaFlex: the whole image at its own aspect, and its reconstruction at that size
    config = default_tokenizer.model.config
    assert result.seen.size == result.reconstruction.size == result.error_map.size == image.size
    assert np.abs(np.asarray(result.seen, np.int16) - np.asarray(image)).max() <= 1  # the input, back from [-1, 1]
    tokens = -(-image.width // config.patch_size) * -(-image.height // config.patch_size)
    assert result.row[:3] == [app.DEFAULT_TOKENIZER, f"{image.width}x{image.height}", tokens]
    bits = tokens * config.latent_channels * app.CONTINUOUS_BITS / (image.width * image.height)
    assert result.row[3] == pytest.approx(bits, abs=1e-4)
    assert result.row[4] > 20 and 0.5 < result.row[5] <= 1  # the trained default model reconstructs photographs
    assert app.framing(result.seen, image) == "the whole input, at its own size"

    # a fixed-size tokenizer saw its processor's center crop, not the whole image
    fixed = app.reconstruct_one(fixed_size, image)
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


def test_generation_tab_picks_classes_by_name(app, default_tokenizer, digits, tmp_path):
    from hf_vtok.cli import main as hf_vtok_main

    # the embedded digits SiT, as `hf-vtok generate` uses it: classes "0".."9", the same images per seed
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
    app.build_demo({"default": default_tokenizer}, {"digits": digits, "imagenet": imagenet})  # both tabs build


def fetch_image(source: str) -> Image.Image:
    return Image.open(io.BytesIO(urllib.request.urlopen(source, timeout=30).read())).convert("RGB")


def shown_images(driver, selector: str) -> list[Image.Image]:
    """The images the page shows under ``selector``, as the server sent them."""
    from selenium.webdriver.common.by import By

    return [fetch_image(element.get_attribute("src")) for element in driver.find_elements(By.CSS_SELECTOR, selector)]


def same(first: Image.Image, second: Image.Image) -> bool:
    return np.array_equal(np.asarray(first), np.asarray(second))


def drive_demo(url: str, profile: Path, app, tokenizer, chelsea, generator, screenshot: Path = SCREENSHOT) -> None:
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

        image, notice, expected = chelsea
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


# --------------------------------------------------------------------------------------------------
# the Space folder of spaces/build_space.py, run from a fresh virtual environment


def front_matter(readme: Path) -> dict:
    """The ``key: value`` lines of a card's front matter (lists as lists of their ``  - item`` lines)."""
    fields, key = {}, None
    for line in readme.read_text(encoding="utf-8").split("\n---\n", 1)[0].splitlines()[1:]:
        if line.startswith("  - "):
            fields[key] = [*fields[key], line[4:]] if isinstance(fields[key], list) else [line[4:]]
            continue
        key, _, value = line.partition(":")
        fields[key] = [] if value.strip() in ("", "[]") else value.strip()
    return fields


@pytest.fixture(scope="module")
def wheel(requirements, tmp_path_factory):
    from tests.testing_utils.packaging import build_wheel

    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def space(wheel, tmp_path_factory) -> Path:
    """``python spaces/build_space.py OUT``: the Space of the embedded models."""
    out = tmp_path_factory.mktemp("space") / "space"
    command = [sys.executable, str(REPO_ROOT / "spaces" / "build_space.py"), str(out), "--wheel", str(wheel)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def fresh_venv(path: Path) -> Path:
    """A new virtual environment without hf_vtok; its third-party packages are this environment's (a ``.pth``
    naming its site-packages: nothing is downloaded), whose own ``.pth`` files (hf_vtok's editable install) do not
    run there. Returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, capture_output=True)
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    Path(purelib, "borrowed_packages.pth").write_text("\n".join(site.getsitepackages()) + "\n", encoding="utf-8")
    return python


def without_checkout() -> dict:
    """This environment without PYTHONPATH (which names the checkout's src/), offline."""
    return {**{key: value for key, value in os.environ.items() if key != "PYTHONPATH"}, "HF_HUB_OFFLINE": "1"}


CHECK_REQUIREMENTS = """
import importlib.metadata, importlib.util, sys
from packaging.requirements import Requirement
assert importlib.util.find_spec("hf_vtok") is None, "the fresh venv has hf_vtok"
unmet = []
for line in open(sys.argv[1], encoding="utf-8").read().splitlines():
    if line.strip() and not line.startswith("#"):
        requirement = Requirement(line)
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            unmet.append(f"{line}: not installed")
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            unmet.append(f"{line}: {version} installed")
assert not unmet, unmet
print(importlib.metadata.version("gradio"))
"""


def start_space(python: Path, folder: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """``python app.py`` in ``folder``, as a Space starts it, offline: ``(process, url)`` (not yet answering)."""
    port = _free_port()
    environment = {**without_checkout(), "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    with log.open("w") as output:
        process = subprocess.Popen(
            [str(python), "app.py"], cwd=folder, env=environment, stdout=output, stderr=subprocess.STDOUT
        )
    return process, f"http://127.0.0.1:{port}/"


def wait_until_serving(process: subprocess.Popen, url: str, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the Space's app.py exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the Space's app.py did not answer on {url}:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def space_server(space, tmp_path_factory):
    """The built Space started from a fresh venv: ``(its python, process, url, log)``. Started early (see
    ``test_prepare_says_when_an_upload_was_resized``) so its start-up overlaps the in-process tests."""
    work = tmp_path_factory.mktemp("served")
    python = fresh_venv(work / "venv")
    process, url = start_space(python, space, work / "app.log")
    yield python, process, url, work / "app.log"
    process.terminate()
    process.wait(timeout=60)


def test_space_card_and_requirements(space, wheel, tmp_path):
    from importlib.metadata import version

    spec = importlib.util.spec_from_file_location("hf_vtok_build_space", REPO_ROOT / "spaces" / "build_space.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    template = front_matter(REPO_ROOT / "spaces" / "README.md")
    assert {"sdk_version", "models", "short_description"} <= set(template) and template["sdk"] == "gradio"
    assert 0 < len(template["short_description"]) <= 60  # the Hub's limit
    card = front_matter(space / "README.md")
    assert card["sdk_version"] == version("gradio") and card["models"] == []  # the embedded models have no Hub id
    assert {key: value for key, value in card.items() if key != "sdk_version"} == {
        key: value for key, value in template.items() if key != "sdk_version"
    }
    lines = (space / "requirements.txt").read_text(encoding="utf-8").splitlines()
    requirements = [line for line in lines if not line.startswith("#")]
    assert "torch>=2.4" in requirements and "torchmetrics>=1.4" in requirements  # hf_vtok's and its demo extra's
    assert not [line for line in requirements if "git+" in line or "gradio" in line or "hf_vtok" in line]
    assert (space / "hf_vtok" / "default_model" / "model.safetensors").is_file()
    assert (space / "hf_vtok" / "default_pipeline" / "model_index.json").is_file()
    assert sorted(path.name for path in (space / "examples").iterdir()) == sorted(Path(e).name for e in app_examples())
    assert json.loads((space / "space.json").read_text()) == {"models": {}, "pipelines": {}}

    # Hub ids are listed as the Space's models; local folders are copied in and named relative to it
    local = REPO_ROOT / "src" / "hf_vtok" / "default_model"
    out = build.build_space(
        tmp_path / "other", {"mine": str(local), "hub": "org/vitok"}, {"sit": "org/sit"}, 512, wheel
    )
    assert front_matter(out / "README.md")["models"] == ["org/vitok", "org/sit"]
    config = json.loads((out / "space.json").read_text())
    assert config == {"models": {"mine": "models/0-mine", "hub": "org/vitok"}, "pipelines": {"sit": "org/sit"},
                      "max_side": 512}  # fmt: skip
    assert (out / "models" / "0-mine" / "config.json").read_bytes() == (local / "config.json").read_bytes()
    with pytest.raises(SystemExit, match="must be new or empty"):
        build.build_space(out, wheel=wheel)
    with pytest.raises(argparse.ArgumentTypeError, match="a folder or a Hub id"):
        build.model_spec("x=not a model")
    assert build.model_spec("org/vitok") == ("vitok", "org/vitok")


def app_examples() -> list[str]:
    return sorted(str(path) for path in (REPO_ROOT / "spaces" / "examples").glob("*.jpg"))


def test_space_folder_in_a_fresh_venv_and_headless_chromium(
    app, space, space_server, default_tokenizer, chelsea, digits, tmp_path
):
    """The built Space, started as a Space starts it (``python app.py`` in the folder) from a fresh venv without
    hf_vtok: its requirements are met, it runs on the package copy inside the folder, and the page works in a
    real browser."""
    python, process, url, log = space_server
    check = subprocess.run(
        [str(python), "-c", CHECK_REQUIREMENTS, str(space / "requirements.txt")],
        cwd=tmp_path, env=without_checkout(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr[-3000:]
    assert check.stdout.strip() == front_matter(space / "README.md")["sdk_version"]  # the gradio the Space gets
    wait_until_serving(process, url, log)
    assert f"hf_vtok from {space / 'hf_vtok'}" in log.read_text()
    drive_demo(url, tmp_path / "profile", app, default_tokenizer, chelsea, digits)
