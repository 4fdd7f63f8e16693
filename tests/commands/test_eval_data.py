"""Evaluation image sources (folder, tar shards, ``datasets``) and framings."""

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from hf_vtok.data import count_images, expand_braces, frame_image, iter_images


def _image(seed: int, size=(40, 30)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_folder_is_read_recursively_in_sorted_order(tmp_path):
    (tmp_path / "b").mkdir()
    _image(0).save(tmp_path / "b" / "one.png")
    _image(1).convert("L").save(tmp_path / "a.jpg")  # grayscale comes back RGB
    _image(2).save(tmp_path / "c.png")
    (tmp_path / "notes.txt").write_text("not an image")
    items = list(iter_images(tmp_path))
    assert [key for key, _ in items] == ["a.jpg", "b/one.png", "c.png"]
    assert all(image.mode == "RGB" for _, image in items)
    assert np.array_equal(np.asarray(items[1][1]), np.asarray(_image(0)))
    assert [key for key, _ in iter_images(tmp_path, num_samples=2)] == ["a.jpg", "b/one.png"]
    with pytest.raises(ValueError, match="num_samples must be positive"):
        iter_images(tmp_path, num_samples=0)


def test_count_images_where_known_without_reading(tmp_path):
    (tmp_path / "photos" / "b").mkdir(parents=True)
    for name in ("a.png", "b/c.jpg"):
        _image(0).save(tmp_path / "photos" / name)
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    assert count_images(tmp_path / "photos") == 2 == len(list(iter_images(tmp_path / "photos")))
    assert count_images(tmp_path / "photos", num_samples=1) == 1
    assert count_images(tmp_path / "photos" / "a.png", num_samples=5) == 1
    with tarfile.open(tmp_path / "shard.tar", "w") as archive:
        archive.add(tmp_path / "photos" / "a.png", arcname="0.png")
    assert count_images(tmp_path / "shard.tar") is None  # only reading the archive tells
    assert count_images(tmp_path / "shard.tar", num_samples=3) == 3
    assert count_images("some/hub-dataset") is None


def test_broken_image_file_is_named(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="broken.png"):
        list(iter_images(tmp_path))


def test_webdataset_shards_with_brace_ranges(tmp_path):
    expected = []
    for shard_index in range(2):
        with tarfile.open(tmp_path / f"shard-{shard_index:03d}.tar", "w") as archive:
            for sample in range(2):
                key = f"sample{shard_index}{sample}"
                image = _image(10 * shard_index + sample)
                expected.append((f"shard-{shard_index:03d}.tar/{key}", image))
                for name, data in ((f"{key}.png", _png_bytes(image)), (f"{key}.cls", b"3")):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
    assert expand_braces("a-{08..10}.tar") == ["a-08.tar", "a-09.tar", "a-10.tar"]
    for source in (str(tmp_path / "shard-{000..001}.tar"), str(tmp_path), str(tmp_path / "shard-*.tar")):
        items = list(iter_images(source))
        assert [key for key, _ in items] == [key for key, _ in expected]
        assert all(np.array_equal(np.asarray(a), np.asarray(b)) for (_, a), (_, b) in zip(items, expected))
    with pytest.raises(ValueError, match="shard-002.tar"):
        list(iter_images(str(tmp_path / "shard-{000..002}.tar")))


def test_datasets_source_local_parquet_streamed_and_not(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")  # not the user's cache
    images = [_image(seed) for seed in range(3)]
    folder = tmp_path / "dataset"
    folder.mkdir()
    table = datasets.Dataset.from_dict({"picture": images, "label": [0, 1, 2]}).cast_column(
        "picture", datasets.Image()
    )
    table.to_parquet(str(folder / "validation-00000.parquet"))
    for streaming in (True, False):
        items = list(iter_images(folder, streaming=streaming, num_samples=2))
        assert len(items) == 2
        assert np.array_equal(np.asarray(items[1][1]), np.asarray(images[1]))
    with pytest.raises(ValueError, match="no column 'image'.*picture"):
        list(iter_images(folder, image_column="image"))
    with pytest.raises(ValueError, match=r"test.*validation"):
        list(iter_images(folder, split="test", streaming=True))


def test_framings():
    wide = _image(0, size=(300, 200))
    assert frame_image(wide, "center", 64).size == (64, 64)
    assert frame_image(wide, "longest-side", 150).size == (150, 100)
    assert frame_image(wide, "longest-side", 512).size == (300, 200)  # never upscaled
    assert frame_image(wide, "none", None) is wide
    with pytest.raises(ValueError, match="crop must be one of"):
        frame_image(wide, "random", 64)
    with pytest.raises(ValueError, match="positive resolution"):
        frame_image(wide, "center", None)
