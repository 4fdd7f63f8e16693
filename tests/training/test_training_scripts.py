"""Every training script for a few steps on tiny configs and tiny data (one process), kill-and-resume equality,
two-process DDP on CPU, the latent cache (resume after a kill, DC-AE), and the embedded default model."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from hf_vtok import MAETokModel, SiTTransformer1DModel, SoftVQModel, ViTokDiTTransformerModel, ViTokModel
from hf_vtok.data import cache_latents, load_latent_cache
from hf_vtok.training import list_checkpoints, to_pixel_values
from tests.testing_utils.training import (
    REPO_ROOT,
    SCRIPTS,
    TINY_GENERATOR,
    TINY_MAETOK,
    TINY_SOFTVQ,
    TINY_VITOK,
    free_port,
    load_script,
    metrics,
    run_script,
    save_teachers,
    write_photos,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_photos(tmp_path_factory.mktemp("photos"), count=4, size=(48, 40), classes=("a", "b"))


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    return save_teachers(tmp_path_factory.mktemp("teachers"))


COMMON = ["--batch-size", 2, "--log-every", 1, "--checkpoint-every", 2, "--ema-decay", 0.9]


def _same_weights(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    return all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


# ------------------------------------------------------------------------------------------------------
def test_train_vitok_loss_decreases(photos, tmp_path):
    output = run_script("train_vitok", [
        "--variant", TINY_VITOK, "--crop", "random", "--crop-min", 16, "--crop-max", 32, "--max-tokens", 16,
        "--tile-size", 16, "--train-data", photos, "--output-dir", tmp_path, "--max-steps", 30, "--lr", 3e-3,
        "--warmup-ratio", 0, "--mask-padding", *COMMON
    ])  # fmt: skip
    rows = metrics(output)
    assert len(rows) == 30 and {"charbonnier", "ssim_loss", "loss", "lr"} <= set(rows[0])
    first = sum(row["loss"] for row in rows[:5]) / 5
    last = sum(row["loss"] for row in rows[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    from transformers import AutoImageProcessor, AutoModel

    model = AutoModel.from_pretrained(output / "model")
    ema = AutoModel.from_pretrained(output / "model_ema")
    assert isinstance(model, ViTokModel) and model.config.mask_padding and not _same_weights(model, ema)
    assert AutoImageProcessor.from_pretrained(output / "model_ema").patch_size == 8
    assert (output / "model" / "preprocessor_config.json").is_file() and (output / "loss_curves.png").is_file()
    assert [path.name for path in list_checkpoints(output)] == ["step-00000028", "step-00000030"]


def test_vitok_training_samples_match_the_processor():
    from PIL import Image

    from hf_vtok import ViTokImageProcessor

    naflex_sample = load_script("train_vitok").naflex_sample
    image = Image.new("RGB", (61, 43), (10, 200, 90))
    image.putpixel((5, 7), (255, 0, 0))
    processor = ViTokImageProcessor(patch_size=8, max_num_patches=20, do_resize=True, resize_mode="token_budget",
                                    padding="longest")  # fmt: skip
    expected = processor(image, return_tensors="pt")
    sample = naflex_sample(to_pixel_values(image), 8, 20)
    for key in ("pixel_values", "patch_mask", "row_idx", "col_idx"):
        torch.testing.assert_close(sample[key], expected[key][0], atol=1e-6, rtol=0)
    expected_size = (int(expected["orig_height"][0]), int(expected["orig_width"][0]))
    assert (sample["orig_height"], sample["orig_width"]) == expected_size


def test_train_softvq_with_repa_and_gan(photos, teachers, tmp_path):
    output = run_script("train_softvq", [
        "--model-config", json.dumps(TINY_SOFTVQ), "--lpips", "random", "--repa-model", teachers["dinov2"],
        "--teacher-patch-size", 8, "--disc-model", teachers["dino"], "--disc-start", 1, "--disc-adaptive-weight",
        "--warmup-steps", 1,
        "--train-data", photos, "--output-dir", tmp_path, "--max-steps", 3, *COMMON
    ])  # fmt: skip
    rows = metrics(output)
    assert {"l2", "lpips", "entropy_loss", "repa", "gan_generator", "disc_loss", "lecam", "disc_consistency"} <= set(
        rows[-1]
    )
    assert "gan_generator" not in rows[0]  # the GAN starts at --disc-start
    from transformers import AutoModel

    model = AutoModel.from_pretrained(output / "model_ema")
    assert isinstance(model, SoftVQModel) and model.config.entropy_loss_ratio == 0.01 and model.config.image_size == 32
    checkpoint = list_checkpoints(output)[-1]
    assert (checkpoint / "model_1.safetensors").is_file()  # the REPA projector (and discriminator) resume too
    assert "lecam" in json.loads((checkpoint / "trainer_state.json").read_text())["extra"].__repr__()


def test_train_maetok_with_auxiliary_targets(photos, teachers, tmp_path):
    output = run_script("train_maetok", [
        "--model-config", json.dumps(TINY_MAETOK), "--lpips", "random", "--aux-dinov2-model", teachers["dinov2"],
        "--aux-siglip-model", teachers["siglip"], "--gan-weight", 0, "--warmup-steps", 1, "--train-data", photos,
        "--output-dir", tmp_path, "--max-steps", 2, *COMMON
    ])  # fmt: skip
    assert {"hog_loss", "dinov2_loss", "siglip_loss", "l2"} <= set(metrics(output)[-1])
    model = MAETokModel.from_pretrained(output / "model")
    assert model.config.auxiliary_targets == ("hog", "dinov2", "siglip")


@pytest.fixture(scope="module")
def softvq_cache(photos, tmp_path_factory):
    from hf_vtok import SoftVQConfig

    folder = tmp_path_factory.mktemp("cache")
    torch.manual_seed(0)
    model = SoftVQModel(SoftVQConfig(**TINY_SOFTVQ, shift_factor=0.1, scaling_factor=2.0)).eval()
    return cache_latents(
        model, photos, folder / "softvq", resolution=32, batch_size=3, shard_size=2, flip=True, progress=False
    )


@pytest.mark.parametrize("family", ["sit", "dit"])
def test_train_generator_on_cached_latents(family, softvq_cache, tmp_path):
    output = run_script("train_generator", [
        "--model", family, "--latents", softvq_cache, "--model-config", json.dumps(TINY_GENERATOR), "--output-dir",
        tmp_path, "--max-steps", 25, "--lr", 3e-3, *COMMON
    ])  # fmt: skip
    rows = metrics(output)
    assert sum(row["loss"] for row in rows[-5:]) < sum(row["loss"] for row in rows[:5])
    model_class = SiTTransformer1DModel if family == "sit" else __import__("hf_vtok").DiTTransformer1DModel
    model = model_class.from_pretrained(output / "transformer_ema")
    assert model.config.num_classes == 2 and model.config.num_tokens == 8 and model.config.in_channels == 8


def test_data_loader_workers_do_not_change_the_run(softvq_cache, tmp_path):
    runs = {}
    for workers in (0, 2):
        output = run_script("train_generator", [
            "--model", "sit", "--latents", softvq_cache, "--model-config", json.dumps(TINY_GENERATOR), "--output-dir",
            tmp_path / str(workers), "--max-steps", 3, "--num-workers", workers, *COMMON
        ])  # fmt: skip
        runs[workers] = SiTTransformer1DModel.from_pretrained(output / "transformer")
    assert _same_weights(runs[0], runs[2])


def test_train_vitok_dit_on_grid_latents(photos, tmp_path):
    from hf_vtok import ViTokConfig

    torch.manual_seed(0)
    tokenizer = ViTokModel(ViTokConfig.from_variant(TINY_VITOK)).eval()
    cache = cache_latents(tokenizer, photos, tmp_path / "cache", resolution=32, progress=False)
    assert load_latent_cache(cache)[0]["latents"].shape == (4, 4, 4)  # [C, h, w] grid latents
    output = run_script("train_generator", [
        "--model", "vitok-dit", "--latents", cache, "--model-config", json.dumps(TINY_GENERATOR), "--output-dir",
        tmp_path / "run", "--max-steps", 2, *COMMON
    ])  # fmt: skip
    model = ViTokDiTTransformerModel.from_pretrained(output / "transformer")
    assert model.config.in_channels == 4 and model.config.num_classes == 2


# ------------------------------------------------------------------------------------------------------
def _generator_command(cache, output, steps):
    return [sys.executable, str(SCRIPTS / "train_generator.py"), "--model", "sit", "--latents", str(cache),
            "--model-config", json.dumps(TINY_GENERATOR), "--output-dir", str(output), "--max-steps", str(steps),
            "--batch-size", "2", "--log-every", "1", "--checkpoint-every", "3", "--ema-decay", "0.9"]  # fmt: skip


def _environment():
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _run_until(command, step: int, send: int) -> subprocess.CompletedProcess:
    """Start ``command``, send signal ``send`` once it has logged ``step``, wait for it to end."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_environment()
    )
    lines, sent = [], False
    for line in process.stdout:
        lines.append(line)
        if line.startswith(f"step {step}/"):
            process.send_signal(send)
            sent = True
            break
    rest, _ = process.communicate(timeout=120)
    output = "".join(lines) + rest
    assert sent, f"the run ended before step {step}:\n{output[-3000:]}"
    return subprocess.CompletedProcess(command, process.returncode, output)


def test_kill_and_resume_equals_uninterrupted_run(softvq_cache, tmp_path):
    steps = 60  # far more than the steps a run makes between a log line and the signal, even on a busy machine
    uninterrupted = run_script("train_generator", _generator_command(softvq_cache, tmp_path / "straight", steps)[2:])
    interrupted = tmp_path / "interrupted"
    command = _generator_command(softvq_cache, interrupted, steps)
    # SIGTERM: a clean stop with a checkpoint at the step it stopped
    stopped = _run_until(command, 4, signal.SIGTERM)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stdout
    assert "stopped by signal" in stopped.stdout
    checkpoint = list_checkpoints(interrupted)[-1]
    stopped_at = int(checkpoint.name[5:])
    assert stopped_at >= 4 and json.loads((checkpoint / "trainer_state.json").read_text())["reason"] == "signal"
    # SIGKILL during the resumed run: it restarts from the last complete checkpoint, whatever was half-written
    killed = _run_until([*command, "--resume"], stopped_at + 4, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL and f"resumed from {checkpoint}" in killed.stdout
    run_script("train_generator", [*command[2:], "--resume"])  # finish in this process
    for name in ("transformer", "transformer_ema"):
        reference = SiTTransformer1DModel.from_pretrained(uninterrupted / name)
        resumed = SiTTransformer1DModel.from_pretrained(interrupted / name)
        assert _same_weights(reference, resumed), name
    straight_rows, resumed_rows = metrics(uninterrupted), metrics(interrupted)
    assert [row["step"] for row in resumed_rows] == list(range(1, steps + 1))
    assert [row["loss"] for row in resumed_rows] == [row["loss"] for row in straight_rows]


def test_ddp_two_processes_on_cpu(softvq_cache, tmp_path):
    port = free_port()
    env = {**_environment(), "ACCELERATE_USE_CPU": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(port), *_generator_command(softvq_cache, tmp_path, 4)[1:]]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    checkpoints = list_checkpoints(tmp_path)
    assert [path.name for path in checkpoints] == ["step-00000003", "step-00000004"]
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))  # every process wrote before the rename
    for checkpoint in checkpoints:
        assert json.loads((checkpoint / "trainer_state.json").read_text())["num_processes"] == 2
        assert (checkpoint / "random_states_0.pkl").is_file() and (checkpoint / "random_states_1.pkl").is_file()
    assert len(metrics(tmp_path)) == 4  # one process logs the loss averaged over both
    SiTTransformer1DModel.from_pretrained(tmp_path / "transformer_ema")


# ------------------------------------------------------------------------------------------------------
class _FailAfter(torch.nn.Module):
    """Wraps an autoencoder; raises after ``calls`` encodes (a kill in the middle of a shard)."""

    def __init__(self, model, calls: int):
        super().__init__()
        self.model, self.calls = model, calls
        self.config = model.config

    def encode(self, pixels):
        self.calls -= 1
        if self.calls < 0:
            raise KeyboardInterrupt
        return self.model.encode(pixels)


def test_cache_latents_resumes_without_duplicates_or_gaps(tmp_path):
    from diffusers import AutoencoderDC

    from hf_vtok.cli import main

    photos = write_photos(tmp_path / "photos", count=5, size=(20, 16), classes=("x", "y"))
    torch.manual_seed(0)
    dcae = AutoencoderDC(
        in_channels=3, latent_channels=4, attention_head_dim=4, encoder_block_types="ResBlock",
        decoder_block_types="ResBlock", encoder_block_out_channels=(8, 16), decoder_block_out_channels=(8, 16),
        encoder_layers_per_block=(1, 1), decoder_layers_per_block=(1, 1), encoder_qkv_multiscales=((), ()),
        decoder_qkv_multiscales=((), ()), decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.5,
    ).eval()  # fmt: skip
    dcae.save_pretrained(tmp_path / "dcae")
    name = str(tmp_path / "dcae")  # as the command line names it
    settings = dict(resolution=16, shard_size=2, flip=True, model_name=name, progress=False)
    straight = cache_latents(dcae, photos, tmp_path / "straight", batch_size=1, **settings)
    with pytest.raises(KeyboardInterrupt):  # image + flip per batch of one: stops inside shard 1
        cache_latents(_FailAfter(dcae, 5), photos, tmp_path / "resumed", batch_size=1, **settings)
    assert (tmp_path / "resumed" / "shard-00000.arrow").is_file()
    assert not (tmp_path / "resumed" / "shard-00001.arrow").exists()
    with pytest.raises(ValueError, match="other settings"):
        cache_latents(dcae, photos, tmp_path / "resumed", **{**settings, "resolution": 8})
    with pytest.raises(ValueError, match="1 of 3 shards"):
        load_latent_cache(tmp_path / "resumed")
    main(["cache-latents", "--model", name, "--images", str(photos), "--output", str(tmp_path / "resumed"),
          "--resolution", "16", "--batch-size", "2", "--shard-size", "2", "--flip", "--device", "cpu"])  # fmt: skip
    resumed = load_latent_cache(tmp_path / "resumed")
    first, second = load_latent_cache(straight)[:], resumed[:]
    order = (("x", 0), ("x", 2), ("x", 4), ("y", 1), ("y", 3))
    expected_keys = [f"{folder}/image{index}.png" for folder, index in order]
    assert second["key"] == first["key"] == expected_keys
    assert torch.equal(second["label"], torch.tensor([0, 0, 0, 1, 1]))
    # the resumed run encodes batches of 2, the first of 1: equal up to float32 summation order
    torch.testing.assert_close(second["latents"], first["latents"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(second["latents_flip"], first["latents_flip"], atol=1e-5, rtol=1e-5)
    assert resumed.cache_info["scaling_factor"] == 0.5 and resumed.cache_info["class_names"] == ["x", "y"]
    assert second["latents"].shape == (5, 4, 8, 8)


# ------------------------------------------------------------------------------------------------------
def test_reconstruct_with_the_embedded_default_model(tmp_path):
    from PIL import Image

    from hf_vtok.cli import main
    from hf_vtok.commands.reconstruct import DEFAULT_MODEL, psnr_db

    photo = REPO_ROOT / "assets" / "chelsea.png"
    main(["reconstruct", str(photo), "--out", str(tmp_path)])
    original = Image.open(photo).convert("RGB")
    reconstruction = Image.open(tmp_path / "chelsea_recon.png")
    assert reconstruction.size == original.size
    assert Image.open(tmp_path / "chelsea_side_by_side.png").width > 2 * original.width
    report = json.loads((DEFAULT_MODEL / "training_report.json").read_text())
    # a held-out photo: the shipped weights reconstruct it as well as the training report says
    assert psnr_db(reconstruction, original) == pytest.approx(report["held_out"]["chelsea.png"]["psnr"], abs=0.5)
    assert psnr_db(reconstruction, original) > 22
