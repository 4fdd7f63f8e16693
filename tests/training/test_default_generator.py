"""``training_scripts/make_default_generator.py`` end to end on a tiny config: every stage, the report, the
pipeline it would ship, and a second run that skips the finished stages."""

import json

import pytest

from tests.testing_utils.training import SCRIPTS, load_script, reset_accelerate

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

TINY_TOKENIZER = dict(
    encoder_hidden_size=16, encoder_num_layers=1, decoder_hidden_size=16, decoder_num_layers=1, decoder_patch_size=8,
    codebook_size=16, num_latent_tokens=4, latent_channels=4,
)  # fmt: skip
TINY_LOOP = dict(max_steps=4, checkpoint_every=2, log_every=1, batch_size=4)


def tiny_config(tmp_path):
    config = json.loads((SCRIPTS / "default_generator.json").read_text())
    config["tokenizer"]["model_config"].update(TINY_TOKENIZER)
    config["tokenizer"].update(TINY_LOOP)
    for options in config["generators"].values():
        options.update(TINY_LOOP, model_config={"hidden_size": 16, "num_layers": 1, "num_attention_heads": 2})
    config["evaluation"].update(num_images=20, guidance_scales=[1.0, 2.0], batch_size=20, ci_images_per_class=1)
    for sampling in config["evaluation"]["sampling"].values():
        sampling["call"]["num_inference_steps"] = 2
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def run(argv):
    reset_accelerate()
    try:
        return load_script("make_default_generator").main([str(arg) for arg in argv])
    finally:
        reset_accelerate()


def test_make_default_generator_on_a_tiny_config(tmp_path):
    from hf_vtok import SiTPipeline, SoftVQModel
    from hf_vtok.cli import main
    from hf_vtok.commands.generate import sampling_defaults
    from hf_vtok.data import load_latent_cache
    from hf_vtok.hub.loading import load_pipeline

    work, installed = tmp_path / "work", tmp_path / "installed"
    argv = ["--config", tiny_config(tmp_path), "--work-dir", work, "--install-dir", installed]
    report = run(argv)
    assert len(report["data"]["held_out_indices"]) == 297 and sum(report["data"]["train_class_counts"]) == 1500
    assert report["classifier"]["accuracy_on_train_digits"] > 0.95
    # the tokenizer's latent normalisation is measured, then used by the cache and the pipeline
    tokenizer = SoftVQModel.from_pretrained(work / "tokenizer")
    assert tokenizer.config.scaling_factor == pytest.approx(report["tokenizer"]["scaling_factor"]) != 1.0
    assert load_latent_cache(work / "latents").cache_info["scaling_factor"] == pytest.approx(
        tokenizer.config.scaling_factor
    )
    for name in ("sit", "dit"):
        runs = report["generators"][name]["runs"]
        assert [row["guidance_scale"] for row in runs] == [1.0, 2.0]
        assert all(0 <= row["accuracy"] <= 1 and len(row["per_class_accuracy"]) == 10 for row in runs)
        assert all(row["frechet_distance"] >= 0 and row["num_images"] == 20 for row in runs)
        assert report["generators"][name]["loss"]["steps"] == 4
    assert report["shipped"]["sampling"]["guidance_scale"] in (1.0, 2.0)
    assert report["ci_check"]["images_per_class"] == 1 and 0 <= report["ci_check"]["floor"] <= 1
    assert report["timings"]["tokenizer"]["seconds"] > 0 and "| sit | 2 |" in report["table"]
    for picture in ("guidance_curve.png", "samples.png", "training_report.json"):
        assert (work / picture).is_file()
    # what would ship: a pipeline folder that `hf-vtok generate --pipeline` reads with its sampling.json
    assert isinstance(load_pipeline(str(installed)), SiTPipeline)
    assert sampling_defaults(str(installed)) == report["shipped"]["sampling"]
    shipped = json.loads((installed / "training_report.json").read_text())
    assert shipped["shipped"]["size_bytes_without_this_report"] > 0
    assert {"guidance_curve.png", "samples.png", "tokenizer_loss_curves.png", "sit_loss_curves.png"} <= {
        path.name for path in installed.iterdir()
    }
    main(["generate", "--pipeline", str(installed), "--class", "2", "--num-images", "2", "--out", str(tmp_path / "s")])
    assert sorted(path.name for path in (tmp_path / "s").iterdir()) == ["class2_000.png", "class2_001.png", "grid.png"]
    # a second run trains nothing: the finished stages are read back
    timings = (work / "timings.json").read_text()
    again = run(argv)
    assert (work / "timings.json").read_text() == timings
    assert again["generators"]["sit"]["runs"] == report["generators"]["sit"]["runs"]
