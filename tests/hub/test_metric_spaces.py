"""hf_vtok's ``evaluate`` modules pushed as metric Spaces (``HfApi`` mocked: nothing is uploaded), and
``hf-vtok eval --push-metrics``.

The pushed folder is loaded again with ``evaluate.load`` from a folder named like the Space, as the Hub id would be.
"""

import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import metadata_load
from PIL import Image

from hf_vtok.hub import metric_space_folder, push_metric_space, push_metric_spaces
from hf_vtok.metrics import EVALUATE_MODULES, evaluate_module_path
from tests.hub.test_hub import FakeHub

evaluate = pytest.importorskip("evaluate")


class FakeSpaceHub(FakeHub):
    """``FakeHub`` that also records how each repo was created."""

    def __init__(self, tmp_path, monkeypatch):
        super().__init__(tmp_path, monkeypatch)
        self.created = []

    def create_repo(self, repo_id, **kwargs):
        self.created.append({"repo_id": repo_id, **kwargs})
        return super().create_repo(repo_id, **kwargs)


def photo_pair():
    """A crop of skimage's astronaut and a noisy copy of it, uint8 [H, W, 3]."""
    skimage_data = pytest.importorskip("skimage.data")
    original = skimage_data.astronaut()[100:164, 150:214]
    noise = np.random.default_rng(0).normal(0, 8, original.shape)
    return (original + noise).clip(0, 255).astype(np.uint8), original


def test_push_metric_space_uploads_a_space_that_evaluate_loads(tmp_path, monkeypatch):
    hub = FakeSpaceHub(tmp_path, monkeypatch)
    push_metric_space("psnr", "me/hf-vtok-psnr")
    assert hub.created == [
        {"repo_id": "me/hf-vtok-psnr", "repo_type": "space", "space_sdk": "gradio", "private": None, "exist_ok": True}
    ]
    assert hub.calls[0]["repo_id"] == "me/hf-vtok-psnr" and hub.calls[0]["repo_type"] == "space"
    assert hub.files() == {"hf-vtok-psnr.py", "README.md", "app.py", "requirements.txt"}
    metadata = metadata_load(hub.pushed / "README.md")
    assert {"evaluate", "metric"} <= set(metadata["tags"]) and metadata["sdk"] == "gradio"
    assert metadata["app_file"] == "app.py" and metadata["sdk_version"] and metadata["short_description"]
    assert (hub.pushed / "requirements.txt").read_text().splitlines()[0] == "hf_vtok"
    readme = (hub.pushed / "README.md").read_text()
    assert 'evaluate.load("me/hf-vtok-psnr")' in readme and "pip install hf_vtok" in readme

    # evaluate.load("me/hf-vtok-psnr") reads <repo name>.py of the Space: the same module, the same numbers
    space = tmp_path / "me" / "hf-vtok-psnr"
    shutil.copytree(hub.pushed, space)
    prediction, reference = photo_pair()
    from_space = evaluate.load(str(space), cache_dir=str(tmp_path / "cache"))
    from_package = evaluate.load(evaluate_module_path("psnr"), cache_dir=str(tmp_path / "cache"))
    expected = from_package.compute(predictions=[prediction], references=[reference])
    assert from_space.compute(predictions=[prediction], references=[reference]) == expected
    assert 25 < expected["psnr"] < 40


@pytest.mark.slow
def test_metric_space_app_scores_an_uploaded_pair(tmp_path):
    """The Space's app.py (run as the Space runs it, without launching) scores two uploads like the module."""
    pytest.importorskip("gradio")
    folder = metric_space_folder("ssim", tmp_path / "ssim", "me/ssim")
    app = runpy.run_path(str(folder / "app.py"), run_name="space")
    prediction, reference = photo_pair()
    expected = evaluate.load(evaluate_module_path("ssim"), cache_dir=str(tmp_path / "cache")).compute(
        predictions=[torch.from_numpy(prediction)], references=[torch.from_numpy(reference)]
    )
    assert app["compute"](prediction, reference) == pytest.approx(expected)
    assert app["PAIRED"] is True
    assert runpy.run_path(str(metric_space_folder("rfid", tmp_path / "rfid", "me/rfid") / "app.py"))["PAIRED"] is False


def test_every_module_makes_a_space_folder_and_names_are_checked(tmp_path, monkeypatch):
    for name in EVALUATE_MODULES:
        folder = metric_space_folder(name, tmp_path / name, f"org/hf-{name}", requirement="hf_vtok @ https://x/y.whl")
        script = (folder / f"hf-{name}.py").read_text()
        assert script == (Path(evaluate_module_path(name)) / f"{name}.py").read_text()
        assert "hf_vtok.metrics.evaluate_metrics" in script
        assert (folder / "requirements.txt").read_text().startswith("hf_vtok @ https://x/y.whl\nevaluate")
        compile((folder / "app.py").read_text(), "app.py", "exec")
    hub = FakeSpaceHub(tmp_path, monkeypatch)
    with pytest.raises(ValueError, match="no hf_vtok evaluate module 'fid'"):
        push_metric_space("fid", "me/fid")
    with pytest.raises(ValueError, match="namespace must be a Hub user"):
        push_metric_spaces(["psnr"], "me/x")
    with pytest.raises(ValueError, match="repo_id must be 'owner/name'"):
        metric_space_folder("psnr", tmp_path / "x", "psnr")
    assert hub.created == []  # nothing created for a bad name


def test_eval_push_metrics_pushes_the_metrics_it_computed(tmp_path, monkeypatch, capsys):
    import hf_vtok
    from hf_vtok.cli import main

    hub = FakeSpaceHub(tmp_path, monkeypatch)
    photos = tmp_path / "photos"
    photos.mkdir()
    prediction, reference = photo_pair()
    for index, image in enumerate((prediction, reference)):
        Image.fromarray(image).save(photos / f"{index}.png")
    torch.manual_seed(0)
    model = hf_vtok.ViTokModel(hf_vtok.ViTokConfig.from_variant("w32_d1_h2-w32_d1_h2/1x8x4"))
    model.save_pretrained(tmp_path / "vitok")
    hf_vtok.ViTokImageProcessor(patch_size=8).save_pretrained(tmp_path / "vitok")
    code = main([
        "eval", "--model", str(tmp_path / "vitok"), "--data", str(photos), "--metrics", "ssim,psnr",
        "--resolution", "32", "--out", str(tmp_path / "eval"), "--device", "cpu", "--push-metrics", "me",
    ])  # fmt: skip
    assert [call["repo_id"] for call in hub.calls] == ["me/ssim", "me/psnr"]
    assert code == 0 and "pushed the metric Spaces me/ssim, me/psnr" in capsys.readouterr().out
    assert all(created["repo_type"] == "space" for created in hub.created)
