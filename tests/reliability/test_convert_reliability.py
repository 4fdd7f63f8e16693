"""``hf-vtok convert``: non-finite weights, mixed dtypes, output folders, the wrong family's checkpoint, bad
overrides, and the wording of the weights_only refusal."""

import argparse
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_vtok import ViTokModel
from hf_vtok.conversion import NonFiniteWeightsError, finish_conversion, unify_dtype
from hf_vtok.utils.checkpoints import UnsafeCheckpointError, load_torch_checkpoint
from tests.models.vitok.test_convert_vitok import VARIANT, _original_files
from tests.reliability.conftest import assert_one_line_error, files_under


def _convert(cli, paths, output, *extra):
    return cli("convert", "vitok", "--encoder", paths["encoder"], "--decoder", paths["decoder"], "--variant", VARIANT,
               "--output", output, *extra)  # fmt: skip


def test_non_finite_weights_are_refused_unless_allowed(cli, tmp_path):
    _, paths, halves = _original_files(tmp_path)
    encoder = dict(halves["encoder"])
    encoder["to_code.bias"] = encoder["to_code.bias"].clone()
    encoder["to_code.bias"][0] = float("nan")
    save_file(encoder, paths["encoder"])
    output = tmp_path / "out"
    result = _convert(cli, paths, output)  # before: converted and saved silently
    assert_one_line_error(result, "encoder.latent_proj.bias", "NaN or infinite", "--allow-non-finite")
    assert not output.exists()
    assert _convert(cli, paths, output, "--allow-non-finite").status == 0
    assert torch.isnan(ViTokModel.from_pretrained(output).encoder.latent_proj.bias[0])


def test_mixed_dtype_halves_are_saved_in_one_dtype(cli, tmp_path):
    _, paths, halves = _original_files(tmp_path)
    save_file({key: value.half() for key, value in halves["encoder"].items()}, paths["encoder"])
    output = tmp_path / "out"
    result = _convert(cli, paths, output)
    assert result.status == 0, result.stderr
    assert "the original weights mix float16, float32: every weight is saved as float32" in result.stdout
    saved = load_file(output / "model.safetensors")  # before: float16 encoder and float32 decoder tensors
    assert {tensor.dtype for tensor in saved.values()} == {torch.float32}
    assert json.loads((output / "config.json").read_text())["dtype"] == "float32"
    declared = tmp_path / "declared"
    assert _convert(cli, paths, declared, "--dtype", "bfloat16").status == 0
    assert {tensor.dtype for tensor in load_file(declared / "model.safetensors").values()} == {torch.bfloat16}


def test_unify_and_finish_on_their_own():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2).half(), torch.nn.Linear(2, 2).bfloat16())
    assert "every weight is saved as float32" in unify_dtype(model)  # float16 + bfloat16: no lossless narrower one
    assert {parameter.dtype for parameter in model.parameters()} == {torch.float32}
    assert unify_dtype(model) is None and finish_conversion(model) == []
    with torch.no_grad():
        model[0].weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteWeightsError, match=r"0\.weight"):
        finish_conversion(model, source="test")
    assert finish_conversion(model, allow_non_finite=True) == []


def test_output_folder_rules(cli, tmp_path):
    _, paths, _ = _original_files(tmp_path)
    other = tmp_path / "other_model"
    other.mkdir()
    (other / "config.json").write_text("{}")
    (other / "stray.bin").write_bytes(b"old")
    result = _convert(cli, paths, other)  # before: overwritten, leaving stray.bin
    assert_one_line_error(result, str(other), "is not empty", "--overwrite")
    assert files_under(other) == ["config.json", "stray.bin"]
    assert _convert(cli, paths, other, "--overwrite").status == 0
    assert "stray.bin" not in files_under(other) and "model.safetensors" in files_under(other)
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".other_model")]  # no staging left
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    assert_one_line_error(_convert(cli, paths, notes, "--overwrite"), "holds no saved model")
    assert (notes / "todo.txt").read_text() == "keep me"
    taken = tmp_path / "file.txt"
    taken.write_text("x")
    assert_one_line_error(_convert(cli, paths, taken), "is an existing file")
    # the release form is checked before anything is downloaded
    result = cli("convert", "--preset", "vitok-v2-350M-f16x64", "--output", notes)
    assert_one_line_error(result, str(notes), "is not empty")


def test_a_failed_save_leaves_nothing_half_written(cli, tmp_path, monkeypatch):
    _, paths, _ = _original_files(tmp_path)

    def fail(self, folder, **kwargs):
        (folder / "model.safetensors").parent.mkdir(parents=True, exist_ok=True)
        (folder / "model.safetensors").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ViTokModel, "save_pretrained", fail)
    output = tmp_path / "out"
    assert_one_line_error(_convert(cli, paths, output), "No space left on device")
    assert not output.exists() and not list(tmp_path.glob(".out*"))


def test_bad_flowmo_override_is_one_line(cli, tmp_path, family_parity_dir):
    checkpoint = family_parity_dir("flowmo") / "flowmo_tiny.pth"
    result = cli("convert", "flowmo", "--checkpoint", checkpoint, "--override", "model.patch_size=banana", "--output",
                 tmp_path / "out")  # fmt: skip
    assert_one_line_error(result, "patch_size", "banana", "not a valid FlowMo config")  # before: a traceback
    result = cli("convert", "flowmo", "--checkpoint", checkpoint, "--override", "model.patch_size=[", "--output",
                 tmp_path / "out")  # fmt: skip
    assert_one_line_error(result, "model.patch_size=[", "not valid yaml")


def test_another_familys_checkpoint_is_named(cli, tmp_path):
    v2flow_like = tmp_path / "checkpoint-last.pth"
    tensors = {"encoder.weight": torch.zeros(2)}
    torch.save({"model": tensors, "model_ema": tensors, "args": argparse.Namespace(model="v2flow_base")}, v2flow_like)
    result = cli("convert", "flowmo", "--checkpoint", v2flow_like, "--output", tmp_path / "out")
    # before: "argparse.Namespace was not an allowed global ... re-running with weights_only=False will likely succeed"
    line = assert_one_line_error(result, str(v2flow_like), "is a V²Flow training checkpoint", "hf-vtok convert v2flow")
    assert "weights_only=False" not in line and "will likely succeed" not in line
    flowmo_like = tmp_path / "flowmo.pth"
    torch.save({"model_ema_state_dict": tensors, "model_state_dict": tensors, "total_steps": 1}, flowmo_like)
    result = cli("convert", "v2flow", "--checkpoint", flowmo_like, "--output", tmp_path / "out")
    assert_one_line_error(result, "is a FlowMo training checkpoint", "hf-vtok convert flowmo")


def test_the_weights_only_refusal_never_suggests_unpickling(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    cases = {
        "namespace.pth": {"args": argparse.Namespace(lr=1)},
        "code.pth": {"weight": Payload()},
    }
    for name, content in cases.items():
        torch.save(content, tmp_path / name)
        with pytest.raises(UnsafeCheckpointError) as error:
            load_torch_checkpoint(tmp_path / name)
        message = str(error.value)
        assert name in message and "does not unpickle" in message
        assert "weights_only=False" not in message and "will likely succeed" not in message
    (tmp_path / "garbage.pth").write_bytes(b"\x80\x02" + b"\x00" * 62)
    (tmp_path / "empty.pth").write_bytes(b"")
    for name in ("garbage.pth", "empty.pth"):
        with pytest.raises(ValueError) as error:
            load_torch_checkpoint(tmp_path / name)
        assert name in str(error.value) and "weights_only=False" not in str(error.value)
