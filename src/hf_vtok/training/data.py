"""The training scripts' data options (``--train-data``, ``--streaming``, ...) and the dataset they build."""

from torch.utils.data import Dataset, IterableDataset

from ..data.datasets import AugmentedImages, StreamingAugmentedImages
from ..data.sources import open_image_source


def add_data_arguments(parser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument(
        "--train-data",
        required=True,
        help="image folder, webdataset shards (a.tar, shards-{000..099}.tar, a folder of .tar), "
        "or a datasets id / folder",
    )
    group.add_argument("--split", help="dataset split (default: train, else the first)")
    group.add_argument("--image-column", help="image column of a datasets dataset (default: found by name / type)")
    group.add_argument("--label-column", help="label column of a datasets dataset (default: 'label' when present)")
    group.add_argument("--streaming", action="store_true", help="stream a Hub dataset instead of downloading it")
    group.add_argument("--shuffle-buffer", type=int, default=1000, help="shuffle buffer of --streaming")


def build_image_dataset(args, transform) -> Dataset | IterableDataset:
    """The training images of ``add_data_arguments`` options, each through ``transform(image, rng) -> dict``."""
    if args.streaming:
        return StreamingAugmentedImages(
            args.train_data,
            transform,
            args.batch_size,
            seed=args.seed,
            split=args.split,
            image_column=args.image_column,
            label_column=args.label_column,
            shuffle_buffer=args.shuffle_buffer,
        )
    source = open_image_source(args.train_data, args.split, args.image_column, args.label_column)
    return AugmentedImages(source, transform, seed=args.seed)


__all__ = ["add_data_arguments", "build_image_dataset"]
