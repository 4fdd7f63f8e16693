"""The pipelines' autoencoder component is ``vae`` (``tokenizer`` names a text tokenizer in diffusers): new folders
save it so, folders of the old layout (component ``tokenizer``, from a folder, the Hub cache or a remote-code push)
still load, and ``pipe.tokenizer`` / ``from_components(tokenizer=)`` are deprecated aliases."""

import json

import pytest
import torch
from diffusers import DiffusionPipeline
from huggingface_hub import constants as hub_constants

import hf_vtok
from hf_vtok.hub.loading import load_pipeline
from hf_vtok.remote_code import NATIVE_ENTRIES
from tests.testing_utils.tiny_models import tiny_sit_pipeline, tiny_vitok_dit_pipeline


def old_layout(folder):
    """``folder`` rewritten as hf_vtok saved pipelines before: the autoencoder under ``tokenizer``."""
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index = {("tokenizer" if key == "vae" else key): value for key, value in index.items()}
    if NATIVE_ENTRIES in index:
        index[NATIVE_ENTRIES] = {
            ("tokenizer" if key == "vae" else key): value for key, value in index[NATIVE_ENTRIES].items()
        }
    index_path.write_text(json.dumps(index, indent=2))
    (folder / "vae").rename(folder / "tokenizer")
    return folder


def sample(pipe) -> torch.Tensor:
    pipe.set_progress_bar_config(disable=True)
    return pipe([1, 2], num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt").images


@pytest.fixture(scope="module")
def pipe():
    return tiny_sit_pipeline(sampler="ode")


def test_new_folders_name_the_autoencoder_vae(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "new")
    index = json.loads((tmp_path / "new" / "model_index.json").read_text())
    assert "vae" in index and "tokenizer" not in index and (tmp_path / "new" / "vae" / "config.json").is_file()
    assert type(pipe).model_cpu_offload_seq == "transformer->vae"
    reloaded = DiffusionPipeline.from_pretrained(tmp_path / "new")  # diffusers' generic loader
    assert isinstance(reloaded, hf_vtok.SiTPipeline) and isinstance(reloaded.vae, type(pipe.vae))


def test_old_layout_folder_loads_and_saves_the_new_layout(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "old")
    old = old_layout(tmp_path / "old")
    expected = sample(pipe)
    for loaded in (hf_vtok.SiTPipeline.from_pretrained(old), load_pipeline(old)):
        assert isinstance(loaded.vae, type(pipe.vae)) and set(loaded.components) == {"vae", "transformer", "scheduler"}
        torch.testing.assert_close(sample(loaded), expected, rtol=0, atol=0)
    half = hf_vtok.SiTPipeline.from_pretrained(old, dtype=torch.bfloat16)
    assert half.vae.dtype == torch.bfloat16 and half.transformer.dtype == torch.bfloat16
    loaded.save_pretrained(tmp_path / "resaved")
    assert "vae" in json.loads((tmp_path / "resaved" / "model_index.json").read_text())
    # diffusers' generic loader cannot pass the component itself: an error that says what loads the folder
    with pytest.raises(ValueError, match=r"names its autoencoder `tokenizer`.*hf_vtok.SiTPipeline.from_pretrained"):
        DiffusionPipeline.from_pretrained(old)


def test_old_layout_loads_from_a_hub_id(pipe, tmp_path, monkeypatch):
    """A Hub repository of the old layout, resolved through the local cache (HF_HUB_OFFLINE: nothing downloads)."""
    repo = tmp_path / "hub" / "models--someone--old-sit"
    pipe.save_pretrained(repo / "snapshots" / ("0" * 40))
    old_layout(repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    loaded = hf_vtok.SiTPipeline.from_pretrained("someone/old-sit", cache_dir=str(tmp_path / "hub"))
    torch.testing.assert_close(sample(loaded), sample(pipe), rtol=0, atol=0)


def test_old_remote_code_push_loads_with_hf_vtok(tmp_path, monkeypatch):
    """A pipeline pushed with remote code before the rename loads into hf_vtok's class (native entries put back)."""
    from tests.hub.test_hub import FakeHub

    fake = FakeHub(tmp_path, monkeypatch)
    pipe = tiny_vitok_dit_pipeline()
    pipe.push_to_hub("me/vitok-dit")
    old = old_layout(fake.pushed)
    loaded = hf_vtok.ViTokDiTPipeline.from_pretrained(old)
    assert type(loaded.vae) is hf_vtok.ViTokModel
    kwargs = dict(class_labels=[3], height=8, width=8, num_inference_steps=2, output_type="pt")
    images = [p(generator=torch.Generator().manual_seed(0), **kwargs).images for p in (loaded, pipe)]
    torch.testing.assert_close(*images, rtol=0, atol=0)


def test_tokenizer_is_a_deprecated_alias_of_vae(pipe):
    with pytest.warns(FutureWarning, match="SiTPipeline.tokenizer is deprecated: the autoencoder component is `vae`"):
        assert pipe.tokenizer is pipe.vae
    with pytest.warns(FutureWarning, match=r"from_components\(tokenizer=...\) is deprecated"):
        rebuilt = hf_vtok.SiTPipeline.from_components(pipe.transformer, tokenizer=pipe.vae)
    assert rebuilt.vae is pipe.vae
    assert hf_vtok.SiTPipeline.from_components(pipe.transformer, pipe.vae).vae is pipe.vae
    with pytest.raises(ValueError, match="pass the tokenizer once"):
        hf_vtok.SiTPipeline.from_components(pipe.transformer, pipe.vae, tokenizer=pipe.vae)
    with pytest.raises(ValueError, match=r"needs the tokenizer \(vae=\)"):
        hf_vtok.SiTPipeline.from_components(pipe.transformer)


def test_old_layout_of_a_copied_folder_keeps_the_original(pipe, tmp_path):
    """Loading an old folder changes nothing on disk."""
    pipe.save_pretrained(tmp_path / "old")
    old = old_layout(tmp_path / "old")
    before = sorted(str(path.relative_to(old)) for path in old.rglob("*"))
    hf_vtok.SiTPipeline.from_pretrained(old)
    assert sorted(str(path.relative_to(old)) for path in old.rglob("*")) == before
