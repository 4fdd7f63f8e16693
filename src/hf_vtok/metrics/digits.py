"""Scores of generated digits (``hf_vtok.data.digits``) by a classifier that never saw the generator's training
digits: an RBF support-vector machine (scikit-learn) fitted on the 8 x 8 pixels of the held-out split.

``DigitClassifier.fit_held_out()`` labels images ``[B, 3, S, S]`` in [0, 1] after averaging them back to 8 x 8;
``score_digits`` gives the class-conditional accuracy (the fraction labelled as the class they were generated
for), the per-class accuracy, the confusion matrix and the Fréchet distance to the held-out digits in the
classifier's feature space (its 45 one-vs-one decision values).
"""

import numpy as np
import torch

from ..data.digits import digits_split, load_digits, to_digit_pixels
from .frechet import frechet_distance

NUM_CLASSES = 10


class DigitClassifier:
    """RBF SVM (``C``, ``gamma="scale"``) on 8 x 8 digit pixels in [0, 1]; deterministic (libsvm, no sampling)."""

    def __init__(self, C: float = 10.0):
        try:
            from sklearn.svm import SVC
        except ImportError as error:
            raise ImportError("the digit classifier needs scikit-learn: pip install scikit-learn") from error
        self.svm = SVC(C=C, gamma="scale", decision_function_shape="ovo")
        self.reference_features: np.ndarray | None = None

    @classmethod
    def fit_held_out(cls, split: dict | None = None, C: float = 10.0) -> "DigitClassifier":
        """Fitted on the held-out digits of ``split`` (default ``digits_split()``), which also are the Fréchet
        reference."""
        split = split or digits_split()
        images, labels = load_digits()
        pixels = images[split["held_out"]].reshape(-1, 64)
        classifier = cls(C).fit(pixels, labels[split["held_out"]])
        classifier.reference_features = classifier.features(pixels)
        return classifier

    def fit(self, pixels: np.ndarray, labels: np.ndarray) -> "DigitClassifier":
        self.svm.fit(pixels, labels)
        return self

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """``[N, 64]`` pixels -> ``[N]`` class ids."""
        return self.svm.predict(pixels)

    def features(self, pixels: np.ndarray) -> np.ndarray:
        """``[N, 64]`` pixels -> ``[N, 45]`` one-vs-one decision values (the space of the Fréchet distance)."""
        return self.svm.decision_function(pixels)


def feature_frechet_distance(first: np.ndarray, second: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``[N, D]`` and ``[M, D]``."""
    if len(first) < 2 or len(second) < 2:
        raise ValueError(f"a Fréchet distance needs at least 2 samples per side, got {len(first)} and {len(second)}")
    return frechet_distance(first.mean(0), np.cov(first, rowvar=False), second.mean(0), np.cov(second, rowvar=False))


def score_digit_pixels(classifier: DigitClassifier, pixels: np.ndarray, labels) -> dict:
    """Scores of ``[N, 64]`` digit pixels meant to show ``labels`` (see ``score_digits``)."""
    labels = np.asarray(labels, dtype=np.int64)
    if pixels.shape != (len(labels), 64):
        raise ValueError(f"pixels {pixels.shape} do not fit {len(labels)} labels of 64 pixels")
    predicted = classifier.predict(pixels)
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    counts = confusion.sum(1)
    per_class = [float(confusion[k, k] / counts[k]) if counts[k] else None for k in range(NUM_CLASSES)]
    scores = {
        "num_images": int(len(labels)),
        "accuracy": float((predicted == labels).mean()),
        "per_class_accuracy": per_class,
        "confusion": confusion.tolist(),
    }
    if classifier.reference_features is not None and len(labels) >= 2:
        scores["frechet_distance"] = feature_frechet_distance(
            classifier.features(pixels), classifier.reference_features
        )
    return scores


def score_digits(classifier: DigitClassifier, images: torch.Tensor, labels) -> dict:
    """Images ``[N, 3, S, S]`` in [0, 1] generated for ``labels`` -> ``{"num_images", "accuracy",
    "per_class_accuracy" (None for absent classes), "confusion" [true][predicted], "frechet_distance"}``."""
    return score_digit_pixels(classifier, to_digit_pixels(images), labels)


__all__ = ["DigitClassifier", "feature_frechet_distance", "score_digit_pixels", "score_digits"]
