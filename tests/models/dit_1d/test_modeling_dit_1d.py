"""The 1D DiT (``DiTTransformer1DModel``, learned sigma) and what it shares with SiT on tiny random configs: the
generator contract, output layout, configs, label dropout, the released-layout converters and the conversion CLI."""

import json

import pytest
import torch
from safetensors.torch import save_file

from hf_vtok import DiTTransformer1DModel, SiTTransformer1DModel
from hf_vtok.cli import main as cli_main
from hf_vtok.conversion import CheckpointMismatchError
from hf_vtok.models.dit_1d import DIT_PRESETS, convert_dit_checkpoint
from hf_vtok.models.sit import SIT_PRESETS, convert_sit_checkpoint
from tests.testing_utils.generator_tester import GeneratorTesterMixin
from tests.testing_utils.tiny_models import TINY_1D, inputs_1d, original_1d_checkpoint, randomize


class TestDiTTransformer1D(GeneratorTesterMixin):
    model_class = DiTTransformer1DModel

    def get_init_kwargs(self):
        return TINY_1D

    def get_inputs(self, model, batch_size=3):
        return inputs_1d(model, batch_size)

    def expected_output_shape(self, hidden_states):
        return (*hidden_states.shape[:-1], 2 * hidden_states.shape[-1])  # [eps | variance values]


def test_output_shapes():
    sit, dit = randomize(SiTTransformer1DModel(**TINY_1D)), randomize(DiTTransformer1DModel(**TINY_1D))
    with torch.no_grad():
        assert tuple(sit(*inputs_1d(sit)).sample.shape) == (3, 6, 4)
        assert tuple(dit(*inputs_1d(dit)).sample.shape) == (3, 6, 8)  # [eps | variance values]
        no_sigma = randomize(DiTTransformer1DModel(**TINY_1D, learn_sigma=False))
        assert tuple(no_sigma(*inputs_1d(no_sigma)).sample.shape) == (3, 6, 4)


def test_config_validation():
    with pytest.raises(ValueError, match="not divisible"):
        SiTTransformer1DModel(**{**TINY_1D, "num_attention_heads": 3})
    with pytest.raises(ValueError, match="class_dropout_prob"):
        DiTTransformer1DModel(**TINY_1D, class_dropout_prob=1.5)


def test_label_dropout_only_in_training():
    model = randomize(DiTTransformer1DModel(**TINY_1D))
    labels = torch.arange(5).repeat(40)
    model.class_embedding.dropout_prob = 0.5
    embedded = model.class_embedding.eval()(labels)
    assert torch.equal(embedded, model.class_embedding.embedding_table(labels))
    dropped = model.class_embedding.train()(labels)
    null = model.class_embedding.embedding_table.weight[model.null_class_label]
    assert 0 < (dropped == null).all(-1).sum() < len(labels)


# --------------------------------------------------------------------------------------------------
# converters


@pytest.mark.parametrize("kind", ["sit", "dit"])
def test_converter_maps_every_original_key(kind, tmp_path):
    checkpoint, config, original = original_1d_checkpoint(tmp_path, kind)
    convert = convert_sit_checkpoint if kind == "sit" else convert_dit_checkpoint
    model = convert(checkpoint, config)
    converted = model.state_dict()
    assert len(converted) == len(original)
    assert torch.equal(converted["proj_in.weight"], original["x_embedder.weight"])
    assert torch.equal(converted["blocks.1.attn.qkv_proj.bias"], original["blocks.1.attn.qkv.bias"])
    assert torch.equal(converted["blocks.0.modulation.weight"], original["blocks.0.adaLN_modulation.1.weight"])
    assert torch.equal(converted["time_embedding.linear_2.weight"], original["t_embedder.mlp.2.weight"])
    assert torch.equal(converted["pos_embed"], original["pos_embed"])


def test_converter_errors_name_the_problem(tmp_path):
    checkpoint, config, original = original_1d_checkpoint(tmp_path, "sit")
    for changes, message in (
        ({"vae_1d": False}, "vae_1d=false"),
        ({"decoder_hidden_size": 8}, "decoder_hidden_size 8 differs"),
        ({"mystery": 1}, r"keys hf_vtok does not know: \['mystery'\]"),
    ):
        bad = json.loads(config.read_text()) | changes
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=message):
            convert_sit_checkpoint(checkpoint, tmp_path / "bad.json")
    del original["blocks.1.mlp.fc2.bias"]
    save_file(original, tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \(1\): blocks\.1\.mlp\.fc2\.bias"):
        convert_sit_checkpoint(tmp_path / "missing.safetensors", config)
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        convert_dit_checkpoint(checkpoint, _dit_config_for(tmp_path))
    with pytest.raises(FileNotFoundError):
        convert_sit_checkpoint(tmp_path / "nothing.safetensors", config)


def _dit_config_for(tmp_path):
    """A DiT config.json for a SiT checkpoint: its output layer is half the size a learned-sigma DiT needs."""
    sit_config = json.loads((tmp_path / "config.json").read_text())
    for key in ("decoder_hidden_size", "path_type", "qk_norm", "use_cfg"):
        sit_config.pop(key)
    (tmp_path / "dit.json").write_text(json.dumps(sit_config | {"learn_sigma": True}))
    return tmp_path / "dit.json"


def test_presets_cover_every_release():
    assert len(SIT_PRESETS) == 10 and len(DIT_PRESETS) == 2
    assert {preset.tokenizer for preset in SIT_PRESETS.values()} >= {"maetok-b-128", "softvq-l-32-512"}
    assert {preset.tokenizer for preset in DIT_PRESETS.values()} == {"softvq-l-64", "softvq-l-32"}


def test_cli_converts_to_a_diffusers_folder(tmp_path):
    checkpoint, config, _ = original_1d_checkpoint(tmp_path, "dit")
    output = tmp_path / "converted"
    cli_main(["convert", "dit", "--checkpoint", str(checkpoint), "--config", str(config), "--output", str(output)])
    assert json.loads((output / "config.json").read_text())["_class_name"] == "DiTTransformer1DModel"
    model = DiTTransformer1DModel.from_pretrained(output)
    assert torch.equal(
        model.state_dict()["blocks.0.attn.out_proj.weight"],
        convert_dit_checkpoint(checkpoint, config).state_dict()["blocks.0.attn.out_proj.weight"],
    )
    with pytest.raises(ValueError, match="--preset, or both --checkpoint and --config"):
        cli_main(["convert", "dit", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "other")])
