"""The digits data set (``hf_vtok.data.digits``) and its classifier scores (``hf_vtok.metrics.digits``)."""

import numpy as np
import pytest
import torch

from hf_vtok.data.digits import digit_image, digits_split, load_digits, to_digit_pixels, write_digit_folder
from hf_vtok.metrics.digits import DigitClassifier, feature_frechet_distance, score_digit_pixels, score_digits


@pytest.fixture(scope="module")
def classifier():
    return DigitClassifier.fit_held_out()


def test_the_split_is_fixed_disjoint_and_complete():
    split = digits_split()
    assert len(split["train"]) == 1500 and len(split["held_out"]) == 297
    assert not set(split["train"]) & set(split["held_out"])
    assert sorted([*split["train"], *split["held_out"]]) == list(range(1797))
    # a RandomState permutation: the same indices on every numpy
    assert split["held_out"][:5].tolist() == [11, 23, 24, 25, 28]
    assert not np.array_equal(digits_split(seed=1)["held_out"], split["held_out"])
    with pytest.raises(ValueError, match="num_held_out must be in 1..1796"):
        digits_split(num_held_out=0)


def test_digit_images_average_back_to_their_pixels(tmp_path):
    images, labels = load_digits()
    image = digit_image(images[5], size=32)
    assert image.mode == "RGB" and image.size == (32, 32)
    tensor = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    pixels = to_digit_pixels(tensor)
    assert pixels.shape == (1, 64)
    assert np.abs(pixels[0] - images[5].reshape(64)).max() < 0.3  # bicubic up, block average down
    assert np.corrcoef(pixels[0], images[5].reshape(64))[0, 1] > 0.97
    with pytest.raises(ValueError, match="multiple of 8"):
        digit_image(images[5], size=30)
    with pytest.raises(ValueError, match=r"\[B, 3, S, S\]"):
        to_digit_pixels(torch.zeros(1, 3, 12, 12))
    folder = write_digit_folder(tmp_path, [0, 1, 10])
    written = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*.png"))
    assert written == sorted(f"{labels[index]}/{index:04d}.png" for index in (0, 1, 10))


def test_the_classifier_never_saw_the_training_digits_and_labels_them(classifier):
    images, labels = load_digits()
    train = digits_split()["train"]
    scores = score_digit_pixels(classifier, images[train].reshape(-1, 64), labels[train])
    assert scores["accuracy"] > 0.95 and scores["num_images"] == 1500
    assert min(scores["per_class_accuracy"]) > 0.85
    assert np.asarray(scores["confusion"]).sum() == 1500
    assert classifier.reference_features.shape == (297, 45)
    assert 0 < scores["frechet_distance"] < 1


def test_scores_of_wrongly_labelled_and_absent_classes(classifier):
    images, labels = load_digits()
    chosen = np.flatnonzero(labels == 4)[:6]
    pictures = torch.stack(
        [torch.from_numpy(np.asarray(digit_image(images[index]), dtype=np.float32) / 255) for index in chosen]
    ).permute(0, 3, 1, 2)
    right = score_digits(classifier, pictures, [4] * 6)
    wrong = score_digits(classifier, pictures, [7] * 6)
    assert right["accuracy"] == 1.0 and wrong["accuracy"] == 0.0
    assert right["per_class_accuracy"][4] == 1.0 and right["per_class_accuracy"][0] is None
    assert wrong["confusion"][7][4] == 6
    # far from the ten-class reference: only fours
    assert (
        right["frechet_distance"]
        > score_digit_pixels(classifier, images[:300].reshape(-1, 64), labels[:300])["frechet_distance"]
    )
    with pytest.raises(ValueError, match="do not fit 5 labels"):
        score_digits(classifier, pictures, [4] * 5)


def test_feature_frechet_distance():
    generator = np.random.default_rng(0)
    features = generator.normal(size=(500, 3))
    assert feature_frechet_distance(features, features) == pytest.approx(0, abs=1e-9)
    assert feature_frechet_distance(features, features + 2) == pytest.approx(12, rel=1e-6)
    with pytest.raises(ValueError, match="at least 2 samples"):
        feature_frechet_distance(features[:1], features)
