"""training_scripts/finetune_lora.py: LoRA on a tokenizer's decoder, adapter-only output, reload and merge."""

import os
import subprocess
import sys

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModel

import hf_vtok
from tests.testing_utils.training import (
    REPO_ROOT,
    TINY_MAETOK,
    TINY_SOFTVQ,
    TINY_VITOK,
    free_port,
    load_script,
    reset_accelerate,
    write_photos,
)

peft = pytest.importorskip("peft")


@pytest.fixture(scope="module")
def script():
    return load_script("finetune_lora")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_photos(tmp_path_factory.mktemp("photos"), count=4, size=(64, 48))


def save_base(folder, family):
    torch.manual_seed(0)
    if family == "vitok":
        model = hf_vtok.ViTokModel(hf_vtok.ViTokConfig.from_variant(TINY_VITOK))
        processor = hf_vtok.ViTokImageProcessor(patch_size=model.config.patch_size)
    else:
        config_class, model_class = {
            "softvq": (hf_vtok.SoftVQConfig, hf_vtok.SoftVQModel),
            "maetok": (hf_vtok.MAETokConfig, hf_vtok.MAETokModel),
        }[family]
        model = model_class(config_class(**{"softvq": TINY_SOFTVQ, "maetok": TINY_MAETOK}[family]))
        processor = hf_vtok.LatentTokenImageProcessor.for_model(model.config)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def arguments(base, photos, output, *extra):
    return [
        "--model", str(base), "--train-data", str(photos), "--output-dir", str(output), "--max-steps", "3",
        "--batch-size", "2", "--crop-size", "32", "--lr", "1e-2", "--lora-rank", "4", "--log-every", "1",
        "--checkpoint-every", "0", *extra,
    ]  # fmt: skip


def finetune(script, argv):
    reset_accelerate()
    try:
        return script.finetune(script.parse_with_config(script.build_parser(), argv))
    finally:
        reset_accelerate()


@torch.no_grad()
def reconstruct(model, inputs):
    return model.decode(model.encode(**inputs)).sample


@pytest.mark.parametrize("family", ["vitok", "softvq", "maetok"])
def test_adapter_round_trip(script, photos, tmp_path, family):
    base = save_base(tmp_path / "base", family)
    extra = ("--save-merged", "--ssim-weight", "0.1", "--target-modules", "proj", "fc1", "fc2")  # + output layers
    output, tuned = finetune(script, arguments(base, photos, tmp_path / "run", *extra))

    adapter = output / script.ADAPTER_FOLDER
    assert {path.name for path in adapter.iterdir()} == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "README.md",
    }
    weights = load_file(adapter / "adapter_model.safetensors")
    assert weights and all("lora_" in key and ".decoder." in key for key in weights)  # the adapter only

    inputs = AutoImageProcessor.from_pretrained(base)(Image.open(next(photos.iterdir())), return_tensors="pt")
    fine_tuned = reconstruct(tuned, inputs)
    original = AutoModel.from_pretrained(base).eval()
    assert (fine_tuned - reconstruct(original, inputs)).abs().max() > 1e-3  # training changed the decoder
    assert torch.equal(tuned.encode(**inputs).latents, original.encode(**inputs).latents)  # not the encoder
    # loading the adapter onto the base model reproduces the fine-tuned outputs
    reloaded = peft.PeftModel.from_pretrained(AutoModel.from_pretrained(base), adapter).eval()
    assert torch.equal(reconstruct(reloaded, inputs), fine_tuned)
    # merge_and_unload: a plain hf_vtok model with the same outputs (the saved merged folder too)
    merged = reloaded.merge_and_unload()
    assert type(merged) is type(original)
    torch.testing.assert_close(reconstruct(merged, inputs), fine_tuned, atol=1e-5, rtol=0)
    saved_merged = AutoModel.from_pretrained(output / script.MERGED_FOLDER).eval()
    torch.testing.assert_close(reconstruct(saved_merged, inputs), fine_tuned, atol=1e-5, rtol=0)


def test_targets_and_refusals(script, tmp_path, photos):
    model = hf_vtok.ViTokModel(hf_vtok.ViTokConfig.from_variant(TINY_VITOK))
    names = script.decoder_linear_layers(model)
    assert names and all(name.startswith("decoder.") for name in names)
    assert script.decoder_linear_layers(model, ["fc2"]) == [name for name in names if name.endswith("fc2")]
    with pytest.raises(ValueError, match="no decoder Linear layer .* matches --target-modules"):
        script.decoder_linear_layers(model, ["nothing"])
    flowmo = tmp_path / "flowmo"
    hf_vtok.FlowMoModel(
        hf_vtok.FlowMoConfig(
            image_size=16, patch_size=4, code_length=4, context_dim=6, bits_per_token=3, mup_width=2,
            enc_mup_width=2, encoder_depth=1, decoder_depth=1, base_hidden_size=64, num_attention_heads=2,
            base_axes_dim=(8, 12, 12),
        )
    ).save_pretrained(flowmo)  # fmt: skip
    hf_vtok.FlowMoImageProcessor(image_size=16).save_pretrained(flowmo)
    with pytest.raises(ValueError, match="decodes by sampling"):
        finetune(script, arguments(flowmo, photos, tmp_path / "run"))


@pytest.mark.parametrize("family", ["vitok", "softvq"])
def test_photos_smaller_than_the_crop_are_scaled_up(script, tmp_path, family):
    """A folder mixing photos under and over --crop-size (32): every crop of a batch has one size (before: the
    NaFlex batch of a 20x28 and a 64x48 photo failed to stack)."""
    photos = write_photos(tmp_path / "photos", count=2, size=(20, 28))
    write_photos(photos / "large", count=2, size=(64, 48))
    base = save_base(tmp_path / "base", family)
    output, _ = finetune(script, arguments(base, photos, tmp_path / "run"))
    assert (output / script.ADAPTER_FOLDER / "adapter_model.safetensors").is_file()
    small = Image.new("RGB", (20, 28))
    assert script.scale_up_to(small, 32).size == (32, 45) and script.scale_up_to(small, 16) is small


@pytest.mark.slow
def test_ddp_adapter_equals_the_single_process_one(script, photos, tmp_path):
    """2 processes x batch 1 see the samples 1 process x batch 2 sees; with the gradients averaged across
    processes (the forward goes through DDP) both runs train the same adapter."""
    base = save_base(tmp_path / "base", "softvq")  # fixed-size images: no batch-dependent padding
    single, _ = finetune(script, arguments(base, photos, tmp_path / "single"))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
        "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        str(REPO_ROOT / "training_scripts" / "finetune_lora.py"),
        *arguments(base, photos, tmp_path / "ddp", "--batch-size", "1"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    one = load_file(single / script.ADAPTER_FOLDER / "adapter_model.safetensors")
    two = load_file(tmp_path / "ddp" / script.ADAPTER_FOLDER / "adapter_model.safetensors")
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], atol=1e-5, rtol=1e-4, msg=key)


@pytest.mark.parametrize("family", ["vitok", "softvq", "maetok", "flowmo", "v2flow"])
def test_lora_target_modules_fit_every_tokenizer(family, tmp_path):
    """``LoraConfig(target_modules=list(model.lora_target_modules))`` wraps each block's attention and MLP
    projections (every target names layers), and adapts the outputs."""
    from peft.tuners.lora import LoraLayer

    from tests.testing_utils.tiny_models import tiny_flowmo_model, tiny_v2flow_model

    if family in ("flowmo", "v2flow"):
        model = tiny_flowmo_model() if family == "flowmo" else tiny_v2flow_model()
    else:
        model = AutoModel.from_pretrained(save_base(tmp_path / family, family))
    targets = model.lora_target_modules
    expected = {
        name
        for name, module in model.named_modules()
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and name.rpartition(".")[2] in targets
    }  # V2Flow's connector has squeeze-excitation fc1 / fc2 convolutions, which peft adapts too
    assert {name.rpartition(".")[2] for name in expected} == set(targets)
    tuned = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=list(targets)))
    wrapped = {name.removeprefix("base_model.model.") for name, module in tuned.named_modules()
               if isinstance(module, LoraLayer)}  # fmt: skip
    assert wrapped == expected


def test_the_script_targets_the_models_lora_target_modules(script):
    model = hf_vtok.MAETokModel(hf_vtok.MAETokConfig(**TINY_MAETOK))
    args = script.build_parser().parse_args(
        ["--model", "x", "--train-data", "x", "--output-dir", "x", "--lora-rank", "2"]
    )
    targeted = script.lora_model(model, args).peft_config["default"].target_modules
    assert {name.rpartition(".")[2] for name in targeted} == set(model.lora_target_modules)
    assert all(name.startswith("decoder.") for name in targeted)  # the encoder stays frozen and unwrapped
    assert "decoder.latent_embed" in script.decoder_linear_layers(model)  # not a default target
