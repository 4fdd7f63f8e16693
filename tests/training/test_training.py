"""The training machinery: data order and augmentations, sources, losses, EMA, logging, checkpoint state,
and FSDP2-sharded EMA / state gathering on gloo."""

import io
import json
import math
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from hf_vtok.data.datasets import draw_generator
from hf_vtok.losses import (
    DinoDiscriminator,
    DinoPerceptualLoss,
    LeCAMRegularizer,
    RepaProjector,
    charbonnier_loss,
    diff_augment,
    hinge_discriminator_loss,
    hinge_generator_loss,
    repa_loss,
    ssim_loss,
)
from hf_vtok.losses.reconstruction import ssim
from hf_vtok.training import (
    AugmentedImages,
    CSVLogger,
    ModelEMA,
    StepBatchSampler,
    StreamingAugmentedImages,
    open_image_source,
    plot_metrics,
    random_crop,
    random_resized_crop,
    read_metrics,
    to_pixel_values,
    warmup_cosine_factor,
)
from hf_vtok.training.checkpointing import _flatten_state, _unflatten_state
from tests.testing_utils.training import TEACHER, free_port, write_photos

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------------------
# data order
def _positions(sampler, steps):
    iterator = iter(sampler)
    return [[position for position, _ in next(iterator)] for _ in range(steps)]


def test_step_sampler_splits_global_batches_and_resumes():
    single = StepBatchSampler(10, batch_size=4, seed=3)
    ranks = [StepBatchSampler(10, batch_size=2, seed=3, num_processes=2, process_index=rank) for rank in range(2)]
    single_batches = list(_take(single, 5))
    rank_batches = [_take(sampler, 5) for sampler in ranks]
    for step in range(5):  # two processes of batch 2 read exactly the global batch of one process of batch 4
        assert rank_batches[0][step] + rank_batches[1][step] == single_batches[step]
    resumed = StepBatchSampler(10, batch_size=4, seed=3, start_step=3)
    assert _take(resumed, 2) == single_batches[3:5]
    # every epoch visits each item once, in a fresh order
    items = [index for batch in single_batches for _, index in batch]
    assert sorted(items[:10]) == list(range(10)) and sorted(items[10:20]) == list(range(10))
    assert items[:10] != items[10:20]


def _take(sampler, steps):
    iterator = iter(sampler)
    return [next(iterator) for _ in range(steps)]


def test_augmentations_are_functions_of_the_draw():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8))
    crop = random_crop(image, 16, 40, draw_generator(0, 5), multiple=8)
    assert crop.width % 8 == 0 and crop.height % 8 == 0 and 16 <= min(crop.size) and max(crop.size) <= 40
    assert random_crop(image, 16, 40, draw_generator(0, 5), multiple=8).tobytes() == crop.tobytes()
    assert random_crop(image, 16, 40, draw_generator(0, 6), multiple=8).tobytes() != crop.tobytes()
    resized = random_resized_crop(image, 32, draw_generator(1, 2), scale=(0.8, 1.0))
    assert resized.size == (32, 32)
    pixels = to_pixel_values(image)
    assert pixels.shape == (3, 50, 70) and pixels.min() >= -1 and pixels.max() <= 1
    with pytest.raises(ValueError, match="multiple <= min_size"):
        random_crop(image, 4, 40, draw_generator(0, 0), multiple=8)


def test_folder_tar_and_datasets_sources(tmp_path):
    write_photos(tmp_path / "folder", count=4, classes=("cat", "dog"))
    folder = open_image_source(tmp_path / "folder")
    assert len(folder) == 4 and folder.class_names == ["cat", "dog"]
    assert [folder.key(index) for index in range(4)] == [
        "cat/image0.png",
        "cat/image2.png",
        "dog/image1.png",
        "dog/image3.png",
    ]
    assert [folder[index][2] for index in range(4)] == [0, 0, 1, 1]
    shard = tmp_path / "shard-000.tar"
    with tarfile.open(shard, "w") as archive:
        for index in range(3):
            buffer = io.BytesIO()
            Image.new("RGB", (8 + index, 8), (index * 40, 0, 0)).save(buffer, format="PNG")
            for name, data in ((f"s{index}.png", buffer.getvalue()), (f"s{index}.cls", str(index + 5).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    shards = open_image_source(str(shard))
    assert (
        len(shards) == 3
        and shards[2][2] == 7
        and shards[2][1].size == (10, 8)
        and shards[1][1].getpixel((0, 0))[0] == 40
    )
    write_photos(tmp_path / "flat", count=2)
    dataset = open_image_source(tmp_path / "flat")
    assert dataset[1][2] == -1  # flat folder: no labels
    # a datasets dataset (saved to disk), random access with its label column
    datasets = pytest.importorskip("datasets")
    table = datasets.Dataset.from_dict(
        {"image": [Image.new("RGB", (8, 8), (i * 50, 0, 0)) for i in range(3)], "label": [2, 0, 1]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])}),
    )
    table.save_to_disk(tmp_path / "saved")
    saved = open_image_source(tmp_path / "saved")
    assert (
        len(saved) == 3
        and saved[0][2] == 2
        and saved[2][1].getpixel((0, 0))[0] == 100
        and saved.class_names == ["a", "b", "c"]
    )


def test_streaming_follows_the_step_rule(tmp_path):
    pytest.importorskip("datasets")
    write_photos(tmp_path / "stream", count=5, size=(16, 16))

    def transform(image, rng):
        return {"value": float(np.asarray(image, dtype=np.float32).mean())}

    def stream(batch, start_step=0, processes=1, rank=0):
        dataset = StreamingAugmentedImages(
            str(tmp_path / "stream"),
            transform,
            batch,
            seed=0,
            start_step=start_step,
            num_processes=processes,
            process_index=rank,
            shuffle_buffer=0,
        )
        iterator = iter(dataset)
        return [next(iterator)["position"] for _ in range(6)]

    assert stream(2) == [0, 1, 2, 3, 4, 5]
    assert stream(1, processes=2, rank=1) == [1, 3, 5, 7, 9, 11]  # epochs continue the positions
    assert stream(2, start_step=2) == [4, 5, 6, 7, 8, 9]


def test_augmented_images_are_reproducible(tmp_path):
    source = open_image_source(write_photos(tmp_path / "photos", count=3))

    def transform(image, rng):
        return {"pixel_values": to_pixel_values(random_crop(image, 8, 16, rng, multiple=8))}

    dataset = AugmentedImages(source, transform, seed=1)
    first, again, other = dataset[(7, 1)], dataset[(7, 1)], dataset[(8, 1)]
    assert (
        torch.equal(first["pixel_values"], again["pixel_values"]) and first["label"] == -1 and first["position"] == 7
    )
    assert first["pixel_values"].shape != other["pixel_values"].shape or not torch.equal(
        first["pixel_values"], other["pixel_values"]
    )


# ------------------------------------------------------------------------------------------------------
# losses
def test_ssim_matches_torchmetrics_and_has_gradients():
    torchmetrics_image = pytest.importorskip("torchmetrics.functional.image")
    x = torch.rand(2, 3, 24, 19) * 2 - 1
    y = (x + 0.2 * torch.randn_like(x)).clamp(-1, 1)
    expected = torchmetrics_image.structural_similarity_index_measure(x, y, data_range=2.0)
    torch.testing.assert_close(ssim(x, y), expected, atol=1e-5, rtol=1e-5)
    assert ssim_loss(x, x).abs() < 1e-6
    x.requires_grad_(True)
    ssim_loss(x, y).backward()
    assert x.grad.abs().sum() > 0


def test_charbonnier_masks_padding_tokens():
    prediction, target = torch.zeros(2, 3, 4), torch.zeros(2, 3, 4)
    target[0, 2] = 100.0  # a padding token of image 0
    mask = torch.tensor([[True, True, False], [True, True, True]])
    torch.testing.assert_close(charbonnier_loss(prediction, target, mask), torch.tensor(1e-3))
    target[1, 0] = 1.0  # one of three valid tokens of image 1 is off by 1
    expected = (1e-3 + (math.sqrt(1 + 1e-6) + 2e-3) / 3) / 2
    torch.testing.assert_close(charbonnier_loss(prediction, target, mask), torch.tensor(expected))
    with pytest.raises(ValueError, match="patch_mask"):
        charbonnier_loss(prediction, target, mask[:, :2])


def test_dino_losses_on_tiny_backbones():
    from transformers import Dinov2Config, Dinov2Model, ViTConfig, ViTModel

    images = torch.rand(2, 3, 32, 32) * 2 - 1
    perceptual = DinoPerceptualLoss(Dinov2Model(Dinov2Config(**TEACHER, mlp_ratio=2)))
    assert perceptual(images, images).abs() < 1e-6
    noisy = (images + 0.3 * torch.randn_like(images)).requires_grad_(True)
    loss = perceptual(noisy, images)
    loss.backward()
    assert loss > 0 and noisy.grad.abs().sum() > 0
    assert not any(parameter.requires_grad for parameter in perceptual.backbone.parameters())

    discriminator = DinoDiscriminator(ViTModel(ViTConfig(**TEACHER), add_pooling_layer=False), readout_layers=(0, 1))
    logits = discriminator(torch.rand(3, 3, 48, 40) * 2 - 1)
    assert logits.shape == (3, 3 * 16)  # embedding + 2 read-outs, 4x4 patches each
    assert all(not name.startswith("_backbone") for name in discriminator.state_dict())  # the frozen DINO is not saved
    hinge_discriminator_loss(logits[:1], logits[1:]).backward()
    assert all(parameter.grad is not None for parameter in discriminator.heads.parameters())


def test_gan_helpers():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    torch.testing.assert_close(hinge_discriminator_loss(real, fake), torch.tensor(0.5 * (0.25 + 0.5)))
    torch.testing.assert_close(hinge_generator_loss(fake), torch.tensor(1.0))
    lecam = LeCAMRegularizer(decay=0.5)
    lecam.update(real, fake)
    assert lecam.real_mean == pytest.approx(0.625) and lecam.fake_mean == pytest.approx(-0.5)
    restored = LeCAMRegularizer()
    restored.load_state_dict(lecam.state_dict())
    torch.testing.assert_close(restored(real, fake), lecam(real, fake))
    images = torch.rand(4, 3, 16, 16, requires_grad=True)
    augmented = diff_augment(images, "color,translation,cutout_0.5", probability=1.0)
    assert augmented.shape == images.shape and not torch.equal(augmented, images)
    augmented.sum().backward()
    assert images.grad is not None
    assert torch.equal(diff_augment(images, "color", probability=0.0), images)
    with pytest.raises(ValueError, match="unknown DiffAugment"):
        diff_augment(images, "rotate", 1.0)


def test_repa_loss():
    projector = RepaProjector(8, 16, hidden_size=32)
    latents = torch.randn(2, 4, 8)
    features = projector(latents).repeat_interleave(3, dim=1).detach()
    torch.testing.assert_close(repa_loss(projector(latents), features), torch.tensor(-1.0))
    with pytest.raises(ValueError, match="evenly"):
        repa_loss(projector(latents), features[:, :10])


# ------------------------------------------------------------------------------------------------------
# EMA, schedules, logging, checkpoint state
def test_ema_tracks_until_start_then_averages():
    model = torch.nn.Linear(2, 1)
    ema = ModelEMA(model, decay=0.5, start_step=1)
    with torch.no_grad():
        model.weight.fill_(2.0)
    ema.update(model, step=1)  # before / at the start step: a copy
    assert torch.equal(ema.shadow[0], model.weight)
    with torch.no_grad():
        model.weight.fill_(4.0)
    ema.update(model, step=2)
    torch.testing.assert_close(ema.shadow[0], torch.full((1, 2), 3.0))
    averaged = ema.averaged_state_dict(model.state_dict())
    torch.testing.assert_close(averaged["weight"], torch.full((1, 2), 3.0))
    restored = ModelEMA(torch.nn.Linear(2, 1), decay=0.5)
    restored.load_state_dict(ema.state_dict())
    assert torch.equal(restored.shadow[0], ema.shadow[0]) and restored.num_updates == 2
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(model, decay=1.0)


def test_warmup_cosine_schedule():
    assert warmup_cosine_factor(0, 100, 10, 0.1, 0.0) == 0.0
    assert warmup_cosine_factor(5, 100, 10, 0.1, 0.0) == pytest.approx(0.5)
    assert warmup_cosine_factor(10, 100, 10, 0.1) == pytest.approx(1.0)
    assert warmup_cosine_factor(100, 100, 10, 0.1) == pytest.approx(0.1)
    assert warmup_cosine_factor(55, 100, 10, 0.0) == pytest.approx(0.5)


def test_csv_logger_resumes_and_plots(tmp_path):
    logger = CSVLogger(tmp_path)
    for step in (1, 2, 3):
        logger.log(step, {"loss": 1.0 / step})
    logger.log(4, {"loss": 0.2, "lr": 0.1})  # a new column rewrites the header
    resumed = CSVLogger(tmp_path)
    resumed.truncate_after(2)  # a run resumed from step 2 recomputes 3 and 4
    resumed.log(3, {"loss": 0.3})
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [row["step"] for row in rows] == [1, 2, 3] and rows[2]["loss"] == pytest.approx(0.3) and "lr" not in rows[0]
    pytest.importorskip("matplotlib")
    assert plot_metrics(tmp_path / "metrics.csv").stat().st_size > 1000


def test_checkpoint_state_round_trip():
    state = {"decay": 0.9, "shadow": {"a.weight": torch.ones(2), "b": torch.zeros(1)}, "nested": {"x": 1}}
    tensors, plain = {}, {}
    _flatten_state("ema", state, tensors, plain)
    assert set(tensors) == {"ema/shadow/a.weight", "ema/shadow/b"} and plain == {"ema/decay": 0.9, "ema/nested/x": 1}
    restored = _unflatten_state("ema", tensors, plain)
    assert restored["decay"] == 0.9 and torch.equal(restored["shadow"]["a.weight"], torch.ones(2))


# ------------------------------------------------------------------------------------------------------
# FSDP2 (torch fully_shard on gloo, 2 processes): sharded EMA, gathered state, save_pretrained
def _fsdp_worker(rank: int, world: int, port: int, folder: str):
    import os

    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import fully_shard

    from hf_vtok import SiTTransformer1DModel
    from hf_vtok.training import fresh_copy_with_state

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = SiTTransformer1DModel(
            in_channels=4, num_tokens=4, hidden_size=16, num_layers=2, num_attention_heads=2, num_classes=3
        )
        reference = {name: value.clone() for name, value in model.state_dict().items()}
        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        ema = ModelEMA(model, decay=0.5)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        torch.manual_seed(1 + rank)
        for step in (1, 2):
            loss = model(torch.randn(2, 4, 4), torch.rand(2), torch.tensor([0, 2])).sample.square().mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            ema.update(model, step)
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(model, options=options)
        averaged = ema.averaged_state_dict(state)
        flat_tensors, flat_plain = {}, {}
        _flatten_state("ema", ema.state_dict(), flat_tensors, flat_plain)  # gathers the sharded averages
        if rank == 0:
            assert set(state) == set(reference) and not torch.equal(
                state["proj_in.weight"], reference["proj_in.weight"]
            )
            assert not torch.equal(averaged["proj_in.weight"], state["proj_in.weight"])
            assert flat_tensors["ema/shadow/proj_in.weight"].shape == reference["proj_in.weight"].shape
            copy = fresh_copy_with_state(model, averaged)
            assert type(copy) is SiTTransformer1DModel  # not fully_shard's generated FSDPSiTTransformer1DModel
            copy.save_pretrained(folder)
        restored = ModelEMA(model, decay=0.5)
        restored.load_state_dict(_unflatten_state("ema", flat_tensors, flat_plain))  # re-shards the full tensors
        for mine, theirs in zip(restored.shadow, ema.shadow):
            assert torch.equal(mine.full_tensor(), theirs.full_tensor())
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_fsdp2_sharded_ema_and_saving(tmp_path):
    import torch.multiprocessing as mp

    from hf_vtok import SiTTransformer1DModel

    port = free_port()
    # fork: the workers inherit the imported modules (spawning re-imports torch, transformers and diffusers)
    mp.start_processes(_fsdp_worker, args=(2, port, str(tmp_path / "ema")), nprocs=2, join=True, start_method="fork")
    loaded = SiTTransformer1DModel.from_pretrained(tmp_path / "ema")
    assert loaded.config.hidden_size == 16
    assert json.loads((tmp_path / "ema" / "config.json").read_text())["_class_name"] == "SiTTransformer1DModel"


def test_feature_targets_resize_to_the_decoder_grid():
    from transformers import Dinov2Config, Dinov2Model

    from hf_vtok import MAETokFeatureTargets

    teacher = Dinov2Model(Dinov2Config(**{**TEACHER, "patch_size": 4}, mlp_ratio=2))  # a 8x8 grid at 32 pixels
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    assert MAETokFeatureTargets(dinov2=teacher)(images)["dinov2"].shape == (2, 64, 16)
    resized = MAETokFeatureTargets(dinov2=teacher, grid_size=(4, 4))(images)["dinov2"]  # reads 16x16 pixels
    assert resized.shape == (2, 16, 16)
