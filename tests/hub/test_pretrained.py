"""hf_vtok.registry / hf_vtok.hub.presets: the released checkpoints, Hub-cache downloads, `hf-vtok convert --preset`.

Nothing downloads: "released" files are the parity fixtures (original formats) put into a Hub cache
folder laid out as huggingface_hub writes it, and each tiny fixture stands in for a real entry whose
expected sizes are replaced by the fixture's.
"""

import dataclasses
import json
import time

import pytest
import torch
from huggingface_hub import constants as hub_constants
from transformers import AutoModel

import hf_vtok
from hf_vtok.cli import main as cli_main
from hf_vtok.conversion import CheckpointMismatchError
from hf_vtok.hub import presets as pretrained
from hf_vtok.hub.presets import PretrainedNotAvailableError, converter_of
from hf_vtok.models.latent_token_vit.convert_latent_token_vit import load_arch_overrides
from hf_vtok.registry import FAMILIES, PRETRAINED, get_pretrained

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # of the files in the test Hub caches
RELEASES_PER_FAMILY = {"vitok": 9, "flowmo": 2, "softvq": 8, "maetok": 2, "sit": 10, "dit": 2}


def test_registry_covers_every_release():
    counts = {}
    for entry in PRETRAINED.values():
        counts[entry.family] = counts.get(entry.family, 0) + 1
        assert hasattr(converter_of(entry.family), "convert_release"), entry.name
        assert entry.license and entry.files and entry.config and "/" in entry.repo_id
        assert entry.kind == ("generator" if entry.family in ("sit", "dit") else "tokenizer")
    assert counts == RELEASES_PER_FAMILY
    for entry in PRETRAINED.values():
        if entry.kind == "generator":  # a generator's latents are its tokenizer's
            tokenizer = get_pretrained(entry.tokenizer)
            assert entry.config["in_channels"] == tokenizer.config["latent_channels"]
            assert entry.config["num_tokens"] == tokenizer.config["num_latent_tokens"]
            assert FAMILIES[entry.family].pipeline and entry.sampling
    aliases = [alias for entry in PRETRAINED.values() for alias in entry.aliases]
    assert len(set(aliases) | set(PRETRAINED)) == len(aliases) + len(PRETRAINED)
    assert get_pretrained("350M-f16x64") is PRETRAINED["vitok-v2-350M-f16x64"]
    with pytest.raises(ValueError, match="unknown preset 'vitok-9000'.*known:"):
        get_pretrained("vitok-9000")


def test_family_tables_are_views_of_the_registry():
    from hf_vtok.models.flowmo.configuration_flowmo import FLOWMO_PRESETS

    assert hf_vtok.VITOK_PRESETS["5B-f32x128"] == ("Td4-T/1x32x128", "philippehansen/ViTok-v2-5B-f32x128")
    assert hf_vtok.SOFTVQ_PRESETS["softvq-l-32"].repo_id == PRETRAINED["softvq-l-32"].repo_id
    assert hf_vtok.MAETOK_PRESETS["maetok-b-128-512"].image_size == 512
    assert hf_vtok.SIT_PRESETS["sit-xl_maetok-b-128"] is PRETRAINED["sit-xl_maetok-b-128"]
    assert FLOWMO_PRESETS["flowmo-hi"] == dict(PRETRAINED["flowmo-hi"].config)


def test_offline_missing_files_fail_at_once_with_what_to_fetch(tmp_path):
    start = time.perf_counter()
    with pytest.raises(PretrainedNotAvailableError) as error:
        hf_vtok.from_preset("maetok-b-128", cache_dir=tmp_path)
    assert time.perf_counter() - start < 5
    message = str(error.value)
    assert "HF_HUB_OFFLINE" in message
    assert "hf download MAETok/maetok-b-128 model.safetensors config.json" in message


def test_unreachable_hub_fails_at_once(tmp_path, monkeypatch):
    """Online mode but no route to the endpoint: no retries (huggingface_hub would back off for ~25 s)."""
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    start = time.perf_counter()
    with pytest.raises(PretrainedNotAvailableError, match=r"127\.0\.0\.1:9 is unreachable"):
        pretrained.download_pretrained("flowmo-lo", cache_dir=tmp_path)
    assert time.perf_counter() - start < 5


# --------------------------------------------------------------------------------------------------
# conversions from a Hub cache holding original-format files


def cache_release(cache, entry, files, revision="main"):
    """Put ``files`` (role -> local file) where huggingface_hub's cache keeps ``entry``'s repository."""
    repo = cache / f"models--{entry.repo_id.replace('/', '--')}"
    commit = COMMIT
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for role, path in files.items():
        (snapshot / entry.files[role]).symlink_to(path)


def _fixture_release(family_parity_dir, family):
    """(real entry name, fixture files by role, converter options) of a family's fixture."""
    root = family_parity_dir(family)
    if family == "vitok":
        variant = json.loads((root / "original_config.json").read_text())["variant"]
        files = {"encoder": root / "encoder.safetensors", "decoder": root / "decoder.safetensors"}
        return "vitok-v2-350M-f16x64", files, {"variant": variant}
    if family == "flowmo":
        from hf_vtok.models.flowmo.convert_flowmo_original_to_hf import load_original_config

        original = load_original_config(root / "original_config.yaml")
        options = {"original_config": original, "width_table": original.get("fixture", {}).get("dit_b_4_override")}
        return "flowmo-lo", {"checkpoint": root / "flowmo_tiny.pth"}, options
    files = {"checkpoint": root / "model.safetensors", "config": root / "config.json"}
    if family in ("softvq", "maetok"):
        options = {"arch_overrides": load_arch_overrides(str(root / "original_config.json"))}
        return {"softvq": "softvq-l-64", "maetok": "maetok-b-128"}[family], files, options
    return {"sit": "sit-xl_softvq-l-64", "dit": "dit-xl_softvq-l-64"}[family], files, {}


def tiny_twin(family_parity_dir, family):
    """A registry entry like the family's real one, whose expected sizes are the fixture's, and its files."""
    name, files, options = _fixture_release(family_parity_dir, family)
    real = PRETRAINED[name]
    variant = options.pop("variant", None)
    direct = dataclasses.replace(real, config={"variant": variant} if variant else {}, converter_options=options)
    model, _ = pretrained.convert_pretrained(direct, files=files)
    config = {key: getattr(model.config, key) for key in real.config}
    return dataclasses.replace(direct, config=config), files, model


@pytest.mark.parametrize("family", sorted(RELEASES_PER_FAMILY))
def test_convert_preset_from_the_hub_cache(family, family_parity_dir, tmp_path, monkeypatch):
    entry, files, direct = tiny_twin(family_parity_dir, family)
    monkeypatch.setitem(PRETRAINED, entry.name, entry)
    cache = tmp_path / "hub"
    cache_release(cache, entry, files)
    assert pretrained.download_pretrained(entry.name, cache_dir=cache).keys() == entry.files.keys()

    output = tmp_path / "converted"
    cli_main(["convert", "--preset", entry.short_name, "--output", str(output), "--cache-dir", str(cache)])
    saved = json.loads((output / "config.json").read_text())
    provenance = json.loads((output / pretrained.PROVENANCE_FILE).read_text())
    assert provenance == {"preset": entry.name, "repo_id": entry.repo_id, "revision": COMMIT,
                          "files": dict(entry.files), "license": entry.license}  # fmt: skip
    if entry.kind == "tokenizer":
        reloaded = AutoModel.from_pretrained(output)
        assert (output / "preprocessor_config.json").is_file()
    else:
        assert saved["_class_name"] == type(direct).__name__
        reloaded = type(direct).from_pretrained(output)
    assert not entry.mismatches(reloaded.config)
    direct_state, reloaded_state = direct.state_dict(), reloaded.state_dict()
    assert direct_state.keys() == reloaded_state.keys()
    assert all(torch.equal(direct_state[key], reloaded_state[key]) for key in direct_state)


def test_files_of_another_release_are_rejected(family_parity_dir, tmp_path):
    """The real SiT-XL entry with the tiny fixture's files: the converted sizes are not the release's."""
    _, files, _ = _fixture_release(family_parity_dir, "sit")
    cache = tmp_path / "hub"
    cache_release(cache, PRETRAINED["sit-xl_maetok-b-128"], files)
    with pytest.raises(CheckpointMismatchError, match="these files are not MAETok/sit-xl_maetok-b-128: hidden_size"):
        hf_vtok.from_preset("sit-xl_maetok-b-128", cache_dir=cache)


def test_generator_preset_as_a_pipeline(family_parity_dir, tmp_path, monkeypatch):
    """``pipeline=True``: the generator, the tokenizer preset it names, and the released sampler."""
    generator, generator_files, _ = tiny_twin(family_parity_dir, "sit")
    tokenizer, tokenizer_files, _ = tiny_twin(family_parity_dir, "softvq")
    generator = dataclasses.replace(generator, tokenizer=tokenizer.name)
    monkeypatch.setitem(PRETRAINED, generator.name, generator)
    monkeypatch.setitem(PRETRAINED, tokenizer.name, tokenizer)
    cache = tmp_path / "hub"
    cache_release(cache, generator, generator_files)
    cache_release(cache, tokenizer, tokenizer_files)
    pipe = hf_vtok.from_preset(generator.name, pipeline=True, cache_dir=cache)
    assert isinstance(pipe, hf_vtok.SiTPipeline) and isinstance(pipe.vae, hf_vtok.SoftVQModel)
    assert pipe.scheduler.config.sampler == "sde" and pipe.scheduler.config.path_type == "cosine"
    pipe.set_progress_bar_config(disable=True)
    images = pipe([1, 2], num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert images.shape[:2] == (2, 3) and torch.isfinite(images).all()
    with pytest.raises(ValueError, match="is a tokenizer; pipeline=True needs a generator preset"):
        hf_vtok.from_preset(tokenizer.name, pipeline=True, cache_dir=cache)


def test_cli_lists_and_explains(capsys):
    assert cli_main(["convert", "--list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in PRETRAINED) and "ksarge/FlowMo" in listing
    with pytest.raises(ValueError, match="give --preset NAME --output DIR"):
        cli_main(["convert", "--preset", "flowmo-lo"])
