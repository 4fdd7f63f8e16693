"""``hf-vtok generate`` and the embedded default pipeline (the digits SiT of
``training_scripts/make_default_generator.py``): files written, the output-folder guard, per-image seeds, and the
classifier's accuracy on its samples above the floor measured at training time."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from hf_vtok.cli import main
from hf_vtok.commands.generate import (
    DEFAULT_PIPELINE,
    SAMPLING_FILE,
    call_arguments,
    generate_images,
    sampling_defaults,
)
from tests.testing_utils.tiny_models import tiny_dit_pipeline, tiny_sit_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def report():
    return json.loads((DEFAULT_PIPELINE / "training_report.json").read_text())


@pytest.fixture(scope="module")
def default_pipeline():
    from hf_vtok.hub.loading import load_pipeline

    return load_pipeline(str(DEFAULT_PIPELINE))


def test_generate_writes_the_grid_and_one_png_per_image(tmp_path):
    out = tmp_path / "samples"
    assert main(["generate", "--class", "3", "--num-images", "4", "--seed", "0", "--out", str(out)]) == 0
    names = sorted(path.name for path in out.iterdir())
    assert names == ["class3_000.png", "class3_001.png", "class3_002.png", "class3_003.png", "grid.png"]
    image = Image.open(out / "class3_000.png")
    assert image.mode == "RGB" and image.size == (32, 32)
    assert Image.open(out / "grid.png").width > 4 * 32
    # different seeds, different digits
    first, second = (np.asarray(Image.open(out / name), dtype=np.int16) for name in names[:2])
    assert np.abs(first - second).max() > 0


def test_generate_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty .*notes.txt.*--overwrite"):
        main(["generate", "--class", "1", "--num-images", "1", "--out", str(tmp_path)])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]
    main(["generate", "--class", "1", "--num-images", "2", "--out", str(tmp_path), "--overwrite"])
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "class1_000.png", "class1_001.png", "grid.png", "notes.txt"
    ]  # fmt: skip
    # a second run replaces the first one's images: nothing of class 1 is left beside class 2
    main(["generate", "--class", "2", "--num-images", "1", "--out", str(tmp_path), "--overwrite"])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["class2_000.png", "grid.png", "notes.txt"]
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is an existing file"):
        main(["generate", "--class", "1", "--out", str(tmp_path / "file")])


def test_generate_errors_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="--num-images must be positive"):
        main(["generate", "--class", "1", "--num-images", "0", "--out", str(tmp_path / "a")])
    with pytest.raises(ValueError, match=r"class_labels \[12\] are out of range"):
        main(["generate", "--class", "12", "--num-images", "1", "--out", str(tmp_path / "b")])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(SystemExit):  # the class is required
        main(["generate", "--out", str(tmp_path / "c")])


def test_sampling_defaults_and_call_arguments(tmp_path, report):
    shipped = sampling_defaults(str(DEFAULT_PIPELINE))
    assert shipped == report["shipped"]["sampling"] and shipped["guidance_scale"] > 1
    assert sampling_defaults(str(tmp_path)) == {}
    (tmp_path / SAMPLING_FILE).write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        sampling_defaults(str(tmp_path))
    pipeline = tiny_sit_pipeline()
    assert call_arguments(pipeline, {"guidance_scale": 2.0, "num_inference_steps": None}) == {"guidance_scale": 2.0}
    with pytest.raises(ValueError, match=r"takes no \['guidance_rescale'\]"):
        call_arguments(pipeline, {"guidance_rescale": 0.5})


@pytest.mark.parametrize("make_pipeline", [tiny_sit_pipeline, tiny_dit_pipeline], ids=["sit-sde", "dit-guided"])
def test_an_image_depends_on_its_seed_only(make_pipeline):
    """One generator per image: the batch size does not change an image (also under guidance, where the DiT
    chain runs on the doubled batch)."""
    pipeline = make_pipeline()
    kwargs = {"num_inference_steps": 3, "guidance_scale": 2.0}
    together = generate_images(pipeline, [0, 1, 2], [5, 6, 7], batch_size=3, **kwargs)
    apart = generate_images(pipeline, [0, 1, 2], [5, 6, 7], batch_size=1, **kwargs)
    assert together.shape == (3, 3, 16, 16)
    torch.testing.assert_close(together, apart, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="3 labels but 2 seeds"):
        generate_images(pipeline, [0, 1, 2], [5, 6], **kwargs)


def test_the_embedded_pipeline_draws_the_digits_it_is_asked_for(default_pipeline, report):
    """The check of the training report, rerun: a classifier fitted on the held-out digits labels the samples of
    ``hf-vtok generate --class 0 .. 9 --num-images k --seed 0``; accuracy at least the floor measured then."""
    from hf_vtok.metrics.digits import DigitClassifier, score_digits

    check = report["ci_check"]
    split = {"held_out": np.asarray(report["data"]["held_out_indices"])}
    classifier = DigitClassifier.fit_held_out(split)
    labels = [label for label in range(10) for _ in range(check["images_per_class"])]
    seeds = [index for _ in range(10) for index in range(check["images_per_class"])]
    call = call_arguments(default_pipeline, sampling_defaults(str(DEFAULT_PIPELINE)))
    images = generate_images(default_pipeline, labels, seeds, **call)
    scores = score_digits(classifier, images, labels)
    assert scores["accuracy"] >= check["floor"], scores
    assert check["floor"] >= 0.8 and report["shipped"]["accuracy"] >= 0.9


@pytest.mark.slow
def test_a_wheel_ships_the_default_pipeline_and_generates_from_it(tmp_path):
    """``pip install hf_vtok`` (no checkout) has every file of the embedded pipeline, and ``generate`` runs from
    the installed package alone."""
    import os
    import subprocess
    import sys
    import zipfile

    from tests.testing_utils.packaging import build_wheel

    wheel = build_wheel(tmp_path)
    expected = {
        "hf_vtok/default_pipeline/" + path.relative_to(DEFAULT_PIPELINE).as_posix()
        for path in DEFAULT_PIPELINE.rglob("*")
        if path.is_file()
    }
    with zipfile.ZipFile(wheel) as archive:
        assert expected <= set(archive.namelist())
        archive.extractall(tmp_path / "installed")
    out = tmp_path / "samples"
    code = (
        "import hf_vtok; from hf_vtok.cli import main; print(hf_vtok.__file__); "
        f"main(['generate', '--class', '7', '--num-images', '2', '--out', {str(out)!r}])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "installed")},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(str(tmp_path / "installed"))
    assert sorted(path.name for path in out.iterdir()) == ["class7_000.png", "class7_001.png", "grid.png"]
