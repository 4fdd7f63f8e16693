"""The ViTok DiT (``ViTokDiTTransformerModel``) on tiny random configs: the generator contract, positions and the
sliding window, variants, bad input and the converter."""

import pytest
import torch
from safetensors.torch import save_file

from hf_vtok import ViTokDiTTransformerModel, parse_vitok_dit_variant
from hf_vtok.cli import main as cli_main
from hf_vtok.conversion import CheckpointMismatchError
from hf_vtok.models.vitok_dit.convert_vitok_dit_original_to_hf import convert_vitok_dit_checkpoint
from hf_vtok.models.vitok_dit.modeling_vitok_dit import sliding_window_mask
from tests.testing_utils.generator_tester import GeneratorTesterMixin
from tests.testing_utils.tiny_models import TINY_VITOK_DIT, randomize


def tiny_vitok_dit():
    return randomize(ViTokDiTTransformerModel(**TINY_VITOK_DIT, class_token=True, num_register_tokens=2))


def vitok_dit_inputs(model, batch_size=3):
    """Tokens of a 3x3 grid, timesteps in [0, 1000), labels with the null class last."""
    config = model.config
    return (
        torch.randn(batch_size, config.num_tokens, config.in_channels),
        torch.rand(batch_size) * 1000,
        torch.tensor([0, 4, 5])[:batch_size],
    )


class TestViTokDiTTransformer(GeneratorTesterMixin):
    model_class = ViTokDiTTransformerModel

    def get_init_kwargs(self):
        return dict(TINY_VITOK_DIT, class_token=True, num_register_tokens=2)

    def get_inputs(self, model, batch_size=3):
        return vitok_dit_inputs(model, batch_size)


def test_bad_positions_raise_clear_errors():
    vitok = tiny_vitok_dit()
    tokens = torch.randn(2, 8, 4)
    with pytest.raises(ValueError, match="square grid"):
        vitok(tokens, torch.ones(2), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="given together"):
        vitok(tokens, torch.ones(2), torch.tensor([1, 2]), row_idx=torch.zeros(8, dtype=torch.long))


def test_config_validation():
    with pytest.raises(ValueError, match="divisible by 4"):
        ViTokDiTTransformerModel(**{**TINY_VITOK_DIT, "num_attention_heads": 8})


@torch.no_grad()
def test_vitok_dit_positions_and_sliding_window():
    model = tiny_vitok_dit()
    tokens, timestep, labels = torch.randn(2, 9, 4), torch.tensor([10.0, 900.0]), torch.tensor([[1], [5]])
    inferred = model(tokens, timestep, labels).sample
    rows = torch.arange(3).repeat_interleave(3)
    cols = torch.arange(3).repeat(3)
    assert torch.equal(model(tokens, timestep, labels, row_idx=rows, col_idx=cols).sample, inferred)
    assert torch.equal(
        model(tokens, timestep, labels, row_idx=rows.expand(2, -1), col_idx=cols.expand(2, -1)).sample, inferred
    )
    assert not torch.allclose(model(tokens, timestep, labels, row_idx=cols, col_idx=rows).sample, inferred)
    mask = sliding_window_mask(num_special_tokens=1, grid_side=3, window=1)
    assert mask[0].all() and mask[:, 0].all()  # the special token sees and is seen by everything
    assert mask[1, 2] and mask[1, 5] and not mask[1, 3] and not mask[1, 9]  # (0,0) sees (0,1), (1,1); not (0,2), (2,2)
    windowed = ViTokDiTTransformerModel(**TINY_VITOK_DIT, class_token=True, num_register_tokens=2, sliding_window=2)
    windowed.load_state_dict(model.state_dict())
    assert torch.equal(
        windowed(tokens, timestep, labels).sample, inferred
    )  # a window covering the grid = full attention
    narrow = ViTokDiTTransformerModel(
        **TINY_VITOK_DIT, class_token=True, num_register_tokens=2, sliding_window=0, sliding_window_every=1
    )
    narrow.load_state_dict(model.state_dict())
    assert not torch.allclose(narrow(tokens, timestep, labels).sample, inferred)


def test_vitok_dit_variants():
    assert parse_vitok_dit_variant("L/256") == {
        "hidden_size": 1024,
        "num_layers": 24,
        "num_attention_heads": 16,
        "mlp_ratio": 2.67,
        "num_tokens": 256,
    }
    assert parse_vitok_dit_variant("Gd32h20/512")["num_layers"] == 32
    assert parse_vitok_dit_variant("w64_d2_h4/16")["hidden_size"] == 64
    assert parse_vitok_dit_variant("w512/64")["num_layers"] == 24  # no base letter: the DiT's own defaults
    for bad in ("L", "L/x", "Q/256", "L/0"):
        with pytest.raises(ValueError, match="variant"):
            parse_vitok_dit_variant(bad)


def test_vitok_dit_converter(tmp_path):
    model = tiny_vitok_dit()
    rename = {
        "proj_in.": "input_proj.", "register_tokens": "reg_token", "time_embedding.linear_1.": "time_embedder.0.",
        "time_embedding.linear_2.": "time_embedder.2.", "class_embedding.": "class_embedder.",
        "head_modulation_proj.": "head_mod_proj.1.", "modulation_proj.": "mod_proj.1.",
        ".q_norm.": ".norm_q.", ".k_norm.": ".norm_k.",
    }  # fmt: skip
    original = {}
    for key, value in model.state_dict().items():
        for new, old in rename.items():
            if key.startswith(new) or (new.startswith(".") and new in key):
                key = key.replace(new, old, 1)
                break
        original[key] = value.clone()
    save_file(original, tmp_path / "dit.safetensors")
    converted = convert_vitok_dit_checkpoint(tmp_path / "dit.safetensors", variant="w16_d2_h2/9")
    assert (converted.config.class_token, converted.config.num_register_tokens, converted.config.num_classes) == (
        True,
        2,
        5,
    )
    inputs = vitok_dit_inputs(model)
    with torch.no_grad():
        assert torch.equal(converted(*inputs).sample, model(*inputs).sample)
    with pytest.raises(CheckpointMismatchError, match="says num_layers=3"):
        convert_vitok_dit_checkpoint(tmp_path / "dit.safetensors", variant="w16_d3_h2/9")
    output = tmp_path / "out"
    cli_main(
        [
            "convert",
            "vitok-dit",
            "--checkpoint",
            str(tmp_path / "dit.safetensors"),
            "--sliding-window",
            "1",
            "--output",
            str(output),
        ]
    )
    assert ViTokDiTTransformerModel.from_pretrained(output).config.sliding_window == 1
