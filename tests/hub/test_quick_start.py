"""The README's quick start runs as written: a converted ViTok (a tiny stand-in with the converter's processor) on a
600x400 and a 2000x1500 photograph, "any size and aspect ratio" within the release's 256-token budget; and its
``evaluate`` example."""

import json
import re
from pathlib import Path

import pytest
from PIL import Image

import hf_vtok
from tests.hub.test_hub import run_snippet

README = Path(__file__).resolve().parents[2] / "README.md"


def quick_start_snippet() -> str:
    text = README.read_text(encoding="utf-8")
    return re.search(r"<!-- test:quickstart -->\s*```python\n(.*?)```", text, re.S).group(1)


@pytest.fixture
def workdir(tmp_path):
    """``vitok-350M-f16x64/`` as ``hf-vtok convert vitok`` writes it (patch 16, ``max_num_patches=256``), with
    ``photo.jpg`` (scikit-image's coffee, 600x400) and ``other.png`` (chelsea at 2000x1500) beside it."""
    data = pytest.importorskip("skimage.data")
    model = hf_vtok.ViTokModel(hf_vtok.ViTokConfig.from_variant("w32_d1_h2-w32_d1_h2/1x16x4")).eval()
    model.save_pretrained(tmp_path / "vitok-350M-f16x64")
    hf_vtok.ViTokImageProcessor(patch_size=16, max_num_patches=256).save_pretrained(tmp_path / "vitok-350M-f16x64")
    Image.fromarray(data.coffee()).save(tmp_path / "photo.jpg", quality=95)
    Image.fromarray(data.chelsea()).resize((2000, 1500), Image.Resampling.BICUBIC).save(tmp_path / "other.png")
    return tmp_path


def test_readme_quick_start_runs_on_any_photo(workdir):
    namespace = run_snippet(quick_start_snippet(), workdir)
    reconstructions = namespace["reconstructions"]
    assert [image.size for image in reconstructions] == [(304, 192), (288, 208)]  # within 256 tokens of 16 px
    for image, (width, height) in zip(reconstructions, [(600, 400), (2000, 1500)]):
        assert (image.width // 16) * (image.height // 16) <= 256
        assert abs(image.width - image.height * width / height) <= 16  # the aspect ratio, to a patch
    inputs = namespace["inputs"]
    assert inputs["patch_mask"].sum(-1).tolist() == [19 * 12, 18 * 13]


def test_the_old_strict_budget_is_what_failed(workdir):
    """Before, the processor refused the 600x400 photo (950 patches over 256); ``over_budget="error"`` still does."""
    processor = hf_vtok.ViTokImageProcessor.from_pretrained(workdir / "vitok-350M-f16x64")
    with pytest.raises(ValueError, match=r"needs 25x38=950 patches of 16px, over max_num_patches=256"):
        processor(Image.open(workdir / "photo.jpg"), over_budget="error")


def test_readme_evaluate_snippet_runs_offline(tmp_path):
    """The README's ``evaluate`` example: modules loaded from the installed package, combined, saved."""
    pytest.importorskip("evaluate")
    pytest.importorskip("skimage.data")
    text = README.read_text(encoding="utf-8")
    snippet = re.search(r"<!-- test:evaluate -->\s*```python\n(.*?)```", text, re.S).group(1)
    namespace = run_snippet(snippet, tmp_path)
    results = namespace["results"]
    assert set(results) == {"psnr", "ssim"} and 25 < results["psnr"] < 35 and 0.4 < results["ssim"] < 1
    (saved,) = (tmp_path / "eval").glob("result-*.json")
    assert json.loads(saved.read_text())["model"] == "my-tokenizer"
