"""``hf-vtok cache-latents`` and the tar sources: class ids, duplicate members, several images per sample,
truncated shards."""

import io
import tarfile

import pytest
import torch
from PIL import Image

from hf_vtok import ViTokConfig, ViTokModel
from hf_vtok.data import cache_latents
from hf_vtok.data.images import iter_images
from hf_vtok.data.sources import TarShardImages, open_image_source
from tests.reliability.conftest import assert_one_line_error, files_under
from tests.testing_utils.training import TINY_VITOK


def _png(size=(16, 16), shade=0) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (shade, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_shard(path, members: list[tuple[str, bytes]]):
    """An uncompressed tar of ``(name, data)`` members, in order (names may repeat, as ``tar -r`` appends)."""
    with tarfile.open(path, "w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    "label, message",
    [
        (b"-5", "class id -5"),  # before: stored as -5
        (str(2**63).encode(), f"class id {2**63}"),  # before: an int64 overflow traceback
        (b"cat", "'cat', not an integer class id"),
        (b"1" * 100, "100 bytes, not an integer class id"),
    ],
)
def test_bad_class_ids_name_the_member(tmp_path, label, message):
    shard = write_shard(tmp_path / "shard.tar", [("s0.png", _png()), ("s0.cls", label)])
    with pytest.raises(ValueError) as error:
        TarShardImages([shard])
    assert message in str(error.value) and f"{shard}:s0.cls" in str(error.value)


def test_the_largest_int64_class_id_is_kept(tmp_path):
    shard = write_shard(tmp_path / "shard.tar", [("s0.png", _png()), ("s0.cls", str(2**63 - 1).encode())])
    assert TarShardImages([shard])[0][2] == 2**63 - 1


def test_a_member_name_that_appears_twice_is_an_error(tmp_path):
    shard = write_shard(tmp_path / "shard.tar", [("s0.png", _png(shade=10)), ("s0.png", _png(shade=200))])
    for read in (lambda: TarShardImages([shard]), lambda: list(iter_images(str(shard)))):
        with pytest.raises(ValueError, match=r"member 's0\.png' appears twice"):  # before: the second one dropped
            read()
    two_labels = write_shard(tmp_path / "cls.tar", [("s0.png", _png()), ("s0.cls", b"1"), ("s0.label.cls", b"2")])
    with pytest.raises(ValueError, match="two .cls members"):
        TarShardImages([two_labels])


def test_further_images_of_a_sample_are_counted(cli, vitok_folder, tmp_path):
    shard = write_shard(
        tmp_path / "shard.tar",
        [("s0.jpg.png", _png(shade=10)), ("s0.seg.png", _png(shade=99)), ("s1.png", _png(shade=20))],
    )
    source = TarShardImages([shard])
    assert len(source) == 2 and source.skipped_images == 1
    assert source[0][1].getpixel((0, 0))[0] == 10  # the first image member of the sample
    result = cli("cache-latents", "--model", vitok_folder, "--images", shard, "--output", tmp_path / "cache",
                 "--resolution", "16", "--device", "cpu")  # fmt: skip
    assert result.status == 0, result.stderr
    assert "1 further image member(s) of webdataset samples skipped (the first is used)" in result.stdout


@pytest.mark.parametrize("cut", [1024 + 200, 1024 + 512 + 50, 2048 + 600])  # in a header, in member data
def test_truncated_shards_are_one_line(cli, vitok_folder, tmp_path, cut):
    shard = write_shard(tmp_path / "shard.tar", [(f"s{i}.png", _png(shade=i)) for i in range(4)])  # 1024 B each
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(shard.read_bytes()[:cut])
    with pytest.raises(ValueError, match="truncated"):  # before: a tarfile traceback, or the rest silently lost
        TarShardImages([truncated])
    with pytest.raises(ValueError, match="truncated"):
        list(iter_images(str(truncated)))
    result = cli("cache-latents", "--model", vitok_folder, "--images", truncated, "--output", tmp_path / "cache",
                 "--device", "cpu")  # fmt: skip
    assert_one_line_error(result, str(truncated), "truncated", command="cache-latents")
    assert not (tmp_path / "cache").exists()


class _Labelled:
    """A source whose labels come from elsewhere (a datasets label column)."""

    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def key(self, index):
        return f"{index:08d}"

    def __getitem__(self, index):
        return self.key(index), Image.new("RGB", (16, 16)), self.labels[index]


def test_labels_outside_int64_or_below_no_label_are_errors(tmp_path):
    torch.manual_seed(0)
    model = ViTokModel(ViTokConfig.from_variant(TINY_VITOK)).eval()
    for labels in ([0, -5], [0, 2**63]):
        output = tmp_path / str(labels[1])
        with pytest.raises(ValueError, match="00000001.*labels are class ids"):
            cache_latents(model, _Labelled(labels), output, batch_size=1, shard_size=1, progress=False)
        assert files_under(output) == ["cache_info.json", "shard-00000.arrow"]  # no half-written shard
    cache = cache_latents(model, _Labelled([3, -1]), tmp_path / "good", progress=False)
    assert files_under(cache) == ["cache_info.json", "shard-00000.arrow"]


def test_an_unreadable_first_image_leaves_no_cache_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"not a png")
    torch.manual_seed(0)
    model = ViTokModel(ViTokConfig.from_variant(TINY_VITOK)).eval()
    with pytest.raises(ValueError, match="broken.png"):
        cache_latents(model, open_image_source(folder), tmp_path / "cache", resolution=16, progress=False)
    assert not (tmp_path / "cache").exists()
