"""Every ``hf-vtok`` error is one line on stderr and a non-zero exit (the traceback only with ``--debug``); output
folders are checked before any work and created only once the inputs are good."""

import os
import shutil

import pytest
import torch
from PIL import Image

import hf_vtok.commands.reconstruct as reconstruct_command
from tests.reliability.conftest import assert_one_line_error, files_under, write_photo


def test_an_error_is_one_line_and_debug_shows_the_traceback(cli, tmp_path):
    missing = tmp_path / "missing.png"
    result = cli("reconstruct", missing, "--out", tmp_path / "out")
    assert_one_line_error(result, missing, command="reconstruct")
    for argv in (("--debug", "reconstruct", missing), ("reconstruct", missing, "--debug")):
        debugged = cli(*argv, "--out", tmp_path / "out")
        assert debugged.status == 1 and "Traceback" in debugged.stderr
        assert debugged.error_lines[-1].startswith("hf-vtok reconstruct: error: ")


def test_usage_errors_are_one_line(cli, tmp_path):
    photo = write_photo(tmp_path / "photo.png")
    for value in ("-1", "0", "two"):  # before: -1 exited 0 having written nothing, 0 "range() arg 3 must not be zero"
        result = cli("reconstruct", photo, "--batch-size", value, "--out", tmp_path / "out")
        line = assert_one_line_error(result, "--batch-size", value)
        assert result.status == 2 and "--help" in line
    assert not (tmp_path / "out").exists()
    assert_one_line_error(cli("reconstruct"), "images")


def test_unexpected_errors_name_their_type(cli, tmp_path, monkeypatch):
    class Surprise(Exception):
        pass

    def fail(args):
        raise Surprise("first\nsecond")

    monkeypatch.setattr(reconstruct_command, "run", fail)
    line = assert_one_line_error(cli("reconstruct", tmp_path / "x.png"), "Surprise: first second")
    assert line.startswith("hf-vtok reconstruct: error: ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_without_cuda_is_one_line(cli, tmp_path):
    photo = write_photo(tmp_path / "photo.png")
    assert_one_line_error(
        cli("reconstruct", photo, "--device", "cuda", "--out", tmp_path / "o"), "CUDA is not available"
    )
    assert_one_line_error(cli("reconstruct", photo, "--device", "banana", "--out", tmp_path / "o"), "'banana'")
    assert not (tmp_path / "o").exists()


def test_a_model_that_is_no_folder_and_no_reachable_repository(cli, tmp_path):
    photo = write_photo(tmp_path / "photo.png")
    for model, reason in (
        ("nobody-hf-vtok/does-not-exist", "cannot be fetched now (HF_HUB_OFFLINE is set)"),  # before: 16 frames
        ("not a repo id!!", "not a valid Hub id"),
        (str(photo), "is a file, not a model folder"),
    ):
        result = cli("reconstruct", photo, "--model", model, "--out", tmp_path / "out")
        assert_one_line_error(result, repr(model), reason, command="reconstruct")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_broken_weight_files_are_named(cli, vitok_folder, tmp_path, damage):
    folder = shutil.copytree(vitok_folder, tmp_path / "model")
    weights = folder / "model.safetensors"
    content = weights.read_bytes()
    weights.write_bytes({"truncated": content[: len(content) // 2], "empty": b"", "garbage": b"\x00" * 64}[damage])
    result = cli("reconstruct", write_photo(tmp_path / "photo.png"), "--model", folder, "--out", tmp_path / "out")
    assert_one_line_error(result, str(weights), "not a readable safetensors file")
    assert not (tmp_path / "out").exists()


def test_output_path_that_is_a_file(cli, vitok_folder, tmp_path):
    taken = tmp_path / "taken.txt"
    taken.write_text("mine")
    photo = write_photo(tmp_path / "photo.png")
    assert_one_line_error(
        cli("reconstruct", photo, "--model", vitok_folder, "--out", taken), str(taken), "is an existing file"
    )
    assert_one_line_error(cli("reconstruct", photo, "--model", vitok_folder, "--out", taken / "sub"), "is a file")
    assert taken.read_text() == "mine"


def test_output_folder_not_writable(cli, vitok_folder, tmp_path, monkeypatch):
    photo = write_photo(tmp_path / "photo.png")
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode: False if str(path) == str(locked) else real_access(path, mode)
    )
    result = cli("reconstruct", photo, "--model", vitok_folder, "--out", locked / "out")
    assert_one_line_error(result, str(locked), "is not writable")  # before any model work
    monkeypatch.undo()
    # a folder the kernel refuses to create even for root (sysfs)
    try:
        os.mkdir("/sys/hf_vtok_probe")
    except OSError:
        result = cli("reconstruct", photo, "--model", vitok_folder, "--out", "/sys/hf_vtok_probe/out")
        assert_one_line_error(result, "/sys/hf_vtok_probe/out", "cannot be created")
    else:
        os.rmdir("/sys/hf_vtok_probe")


def test_inputs_with_the_same_name_get_unique_outputs(cli, vitok_folder, tmp_path):
    first = write_photo(tmp_path / "a" / "x.png", size=(24, 16), seed=1)
    second = write_photo(tmp_path / "b" / "x.png", size=(16, 32), seed=2)
    third = write_photo(tmp_path / "x.jpg", size=(8, 8), seed=3)
    out = tmp_path / "out"
    result = cli("reconstruct", first, second, third, "--model", vitok_folder, "--out", out, "--no-side-by-side")
    assert result.status == 0, result.stderr
    # before: one x_recon.png (the last input) and "wrote 2 reconstruction(s)"
    assert files_under(out) == ["x-1_recon.png", "x-2_recon.png", "x-3_recon.png"]
    for index, source in enumerate((first, second, third), start=1):
        assert Image.open(out / f"x-{index}_recon.png").size == Image.open(source).size
        assert f"{source}: another input has the name 'x'; written as x-{index}_recon.png" in result.stdout
    assert "wrote 3 reconstruction(s)" in result.stdout


def test_eval_of_an_unreachable_dataset_leaves_no_folder(cli, vitok_folder, tmp_path):
    out = tmp_path / "eval"
    result = cli("eval", "--model", vitok_folder, "--data", "nobody-hf-vtok/some-dataset", "--metrics", "psnr",
                 "--out", out)  # fmt: skip
    assert_one_line_error(result, "'nobody-hf-vtok/some-dataset'", command="eval")
    assert not out.exists()  # before: an empty eval folder was left behind


def test_eval_generation_creates_its_folder_only_for_good_inputs(cli, tmp_path):
    out = tmp_path / "generation"
    weights = tmp_path / "inception.safetensors"
    result = cli("eval-generation", "--pipeline", tmp_path / "missing", "--num-samples", "4", "--reference",
                 tmp_path / "ref.npz", "--inception-weights", weights, "--out", out)  # fmt: skip
    assert_one_line_error(result, "inception.safetensors", command="eval-generation")
    assert not out.exists()


def test_check_device():
    from hf_vtok.utils.devices import check_device

    assert check_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="'cuda:x' is not a device"):
        check_device("cuda:x")
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        assert check_device("cuda").type == "cuda"
        with pytest.raises(ValueError, match=f"has {count} CUDA device"):
            check_device(f"cuda:{count}")
    else:
        with pytest.raises(ValueError, match="CUDA is not available"):
            check_device("cuda:0")
