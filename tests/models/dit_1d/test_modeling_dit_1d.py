"""SiT / DiT 1D transformers and the ViTok DiT with tiny random configs: save / load, training hooks,
bad input, converters and the conversion CLI."""

import json

import pytest
import torch
from safetensors.torch import save_file

from hf_vtok import DiTTransformer1DModel, SiTTransformer1DModel, ViTokDiTTransformerModel, parse_vitok_dit_variant
from hf_vtok.cli import main as cli_main
from hf_vtok.conversion import CheckpointMismatchError
from hf_vtok.models.dit_1d import DIT_PRESETS, convert_dit_checkpoint
from hf_vtok.models.sit import SIT_PRESETS, convert_sit_checkpoint
from hf_vtok.models.vitok_dit.convert_vitok_dit_original_to_hf import convert_vitok_dit_checkpoint
from hf_vtok.models.vitok_dit.modeling_vitok_dit import sliding_window_mask

TINY_1D = dict(in_channels=4, num_tokens=6, hidden_size=16, num_layers=2, num_attention_heads=2, num_classes=5)
TINY_VITOK = dict(in_channels=4, hidden_size=16, num_layers=2, num_attention_heads=2, num_classes=5, num_tokens=9)


def _randomize(model, seed=0):
    """Non-trivial weights (the zero-initialised adaLN / modulation would hide bugs)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return model.eval()


def _inputs_1d(model, batch=3):
    config = model.config
    hidden = torch.randn(batch, config.num_tokens, config.in_channels)
    if isinstance(model, SiTTransformer1DModel):
        timestep = torch.rand(batch)
    else:
        timestep = torch.randint(0, 1000, (batch,))
    return hidden, timestep, torch.tensor([0, 4, config.num_classes])[:batch]


MODELS = {
    "sit": lambda: _randomize(SiTTransformer1DModel(**TINY_1D)),
    "dit": lambda: _randomize(DiTTransformer1DModel(**TINY_1D)),
    "vitok_dit": lambda: _randomize(ViTokDiTTransformerModel(**TINY_VITOK, class_token=True, num_register_tokens=2)),
}


def _inputs(name, model, batch=3):
    if name == "vitok_dit":
        config = model.config
        return (
            torch.randn(batch, config.num_tokens, config.in_channels),
            torch.rand(batch) * 1000,
            torch.tensor([0, 4, 5])[:batch],
        )
    return _inputs_1d(model, batch)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_save_load_is_bit_identical(name, tmp_path):
    model = MODELS[name]()
    inputs = _inputs(name, model)
    with torch.no_grad():
        expected = model(*inputs).sample
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(*inputs).sample, expected)
    public = lambda config: {key: value for key, value in config.items() if not key.startswith("_")}  # noqa: E731
    assert public(reloaded.config) == public(model.config)


def test_output_shapes():
    sit, dit = MODELS["sit"](), MODELS["dit"]()
    with torch.no_grad():
        assert tuple(sit(*_inputs_1d(sit)).sample.shape) == (3, 6, 4)
        assert tuple(dit(*_inputs_1d(dit)).sample.shape) == (3, 6, 8)  # [eps | variance values]
        no_sigma = _randomize(DiTTransformer1DModel(**TINY_1D, learn_sigma=False))
        assert tuple(no_sigma(*_inputs_1d(no_sigma)).sample.shape) == (3, 6, 4)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradient_checkpointing_gives_the_same_gradients(name):
    model = MODELS[name]()
    inputs = _inputs(name, model)
    gradients = []
    for checkpointing in (False, True):
        model.zero_grad()
        if checkpointing:
            model.enable_gradient_checkpointing()
        model.train()
        model(*inputs).sample.square().mean().backward()
        gradients.append(
            {key: value.grad.clone() for key, value in model.named_parameters() if value.grad is not None}
        )
    assert model.is_gradient_checkpointing
    assert gradients[0].keys() == gradients[1].keys() and len(gradients[0]) > 10
    for key in gradients[0]:
        torch.testing.assert_close(gradients[1][key], gradients[0][key], msg=key)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_lora_adapter_round_trip(name, tmp_path):
    peft = pytest.importorskip("peft")
    model = MODELS[name]()
    inputs = _inputs(name, model)
    with torch.no_grad():
        base = model(*inputs).sample
    model.add_adapter(peft.LoraConfig(r=2, lora_alpha=2, target_modules=["qkv_proj", "out_proj", "fc1", "fc2"]))
    with torch.no_grad():
        assert torch.equal(model(*inputs).sample, base)  # LoRA B starts at zero
        for key, parameter in model.named_parameters():
            if "lora_B" in key:
                parameter.normal_(0, 0.1)
        adapted = model(*inputs).sample
    assert not torch.allclose(adapted, base)
    model.save_lora_adapter(tmp_path)
    fresh = MODELS[name]()
    fresh.load_lora_adapter(tmp_path, weight_name="pytorch_lora_weights.safetensors", prefix=None)
    with torch.no_grad():
        torch.testing.assert_close(fresh(*inputs).sample, adapted)


def test_bfloat16_forward():
    model = MODELS["sit"]()
    inputs = _inputs_1d(model)
    with torch.no_grad():
        reference = model(*inputs).sample
        half = model.to(torch.bfloat16)(*inputs).sample
    assert half.dtype == torch.bfloat16
    assert (half.float() - reference).abs().max() < 0.1 * reference.abs().max()


def test_bad_inputs_raise_clear_errors():
    model = MODELS["sit"]()
    hidden, timestep, labels = _inputs_1d(model)
    with pytest.raises(ValueError, match=r"hidden_states must be \[B, 6, 4\]"):
        model(hidden[:, :5], timestep, labels)
    with pytest.raises(ValueError, match="out of range"):
        model(hidden, timestep, torch.tensor([0, 1, 6]))
    with pytest.raises(ValueError, match="integer ids"):
        model(hidden, timestep, labels.float())
    with pytest.raises(ValueError, match="timestep must be a scalar"):
        model(hidden, timestep[:2], labels)
    no_null = SiTTransformer1DModel(**TINY_1D, class_dropout_prob=0.0)
    assert no_null.null_class_label is None
    with pytest.raises(ValueError, match=r"expected 0\.\.4$"):
        no_null(hidden, timestep, labels)  # label 5 would be the null class, which this model lacks
    vitok = MODELS["vitok_dit"]()
    tokens = torch.randn(2, 8, 4)
    with pytest.raises(ValueError, match="square grid"):
        vitok(tokens, torch.ones(2), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="given together"):
        vitok(tokens, torch.ones(2), torch.tensor([1, 2]), row_idx=torch.zeros(8, dtype=torch.long))


def test_config_validation():
    with pytest.raises(ValueError, match="not divisible"):
        SiTTransformer1DModel(**{**TINY_1D, "num_attention_heads": 3})
    with pytest.raises(ValueError, match="class_dropout_prob"):
        DiTTransformer1DModel(**TINY_1D, class_dropout_prob=1.5)
    with pytest.raises(ValueError, match="divisible by 4"):
        ViTokDiTTransformerModel(**{**TINY_VITOK, "num_attention_heads": 8})


def test_label_dropout_only_in_training():
    model = MODELS["dit"]()
    labels = torch.arange(5).repeat(40)
    model.class_embedding.dropout_prob = 0.5
    embedded = model.class_embedding.eval()(labels)
    assert torch.equal(embedded, model.class_embedding.embedding_table(labels))
    dropped = model.class_embedding.train()(labels)
    null = model.class_embedding.embedding_table.weight[model.null_class_label]
    assert 0 < (dropped == null).all(-1).sum() < len(labels)


@torch.no_grad()
def test_vitok_dit_positions_and_sliding_window():
    model = MODELS["vitok_dit"]()
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
    windowed = ViTokDiTTransformerModel(**TINY_VITOK, class_token=True, num_register_tokens=2, sliding_window=2)
    windowed.load_state_dict(model.state_dict())
    assert torch.equal(
        windowed(tokens, timestep, labels).sample, inferred
    )  # a window covering the grid = full attention
    narrow = ViTokDiTTransformerModel(
        **TINY_VITOK, class_token=True, num_register_tokens=2, sliding_window=0, sliding_window_every=1
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


# --------------------------------------------------------------------------------------------------
# converters
def _original_1d_checkpoint(tmp_path, kind, depth=2, hidden=16, channels=4, tokens=6, classes=5, **config_changes):
    """A checkpoint in the released layout (original key names) and its config.json."""
    out = 2 * channels if kind == "dit" else channels
    shapes = {
        "x_embedder.weight": (hidden, channels),
        "x_embedder.bias": (hidden,),
        "pos_embed": (1, tokens, hidden),
        "t_embedder.mlp.0.weight": (hidden, 256),
        "t_embedder.mlp.0.bias": (hidden,),
        "t_embedder.mlp.2.weight": (hidden, hidden),
        "t_embedder.mlp.2.bias": (hidden,),
        "y_embedder.embedding_table.weight": (classes + 1, hidden),
        "final_layer.linear.weight": (out, hidden),
        "final_layer.linear.bias": (out,),
        "final_layer.adaLN_modulation.1.weight": (2 * hidden, hidden),
        "final_layer.adaLN_modulation.1.bias": (2 * hidden,),
    }
    for block in range(depth):
        shapes.update({
            f"blocks.{block}.attn.qkv.weight": (3 * hidden, hidden), f"blocks.{block}.attn.qkv.bias": (3 * hidden,),
            f"blocks.{block}.attn.proj.weight": (hidden, hidden), f"blocks.{block}.attn.proj.bias": (hidden,),
            f"blocks.{block}.mlp.fc1.weight": (4 * hidden, hidden), f"blocks.{block}.mlp.fc1.bias": (4 * hidden,),
            f"blocks.{block}.mlp.fc2.weight": (hidden, 4 * hidden), f"blocks.{block}.mlp.fc2.bias": (hidden,),
            f"blocks.{block}.adaLN_modulation.1.weight": (6 * hidden, hidden),
            f"blocks.{block}.adaLN_modulation.1.bias": (6 * hidden,),
        })  # fmt: skip
    if config_changes.get("qk_norm"):
        head_dim = hidden // 2
        for block in range(depth):
            for norm in ("q_norm", "k_norm"):
                shapes.update(
                    {
                        f"blocks.{block}.attn.{norm}.weight": (head_dim,),
                        f"blocks.{block}.attn.{norm}.bias": (head_dim,),
                    }
                )
    generator = torch.Generator().manual_seed(1)
    state_dict = {key: torch.randn(shape, generator=generator) for key, shape in shapes.items()}
    config = {
        "input_size": tokens, "in_channels": channels, "hidden_size": hidden, "depth": depth, "num_heads": 2,
        "mlp_ratio": 4.0, "num_classes": classes, "class_dropout_prob": 0.1, "patch_size": 1, "vae_1d": True,
        "license": "apache-2.0", "tags": ["x"], "repo_url": "https://example.invalid",
    }  # fmt: skip
    config.update(
        {"decoder_hidden_size": hidden, "path_type": "edm", "qk_norm": False, "use_cfg": True}
        if kind == "sit"
        else {"learn_sigma": True}
    )
    config.update(config_changes)
    save_file(state_dict, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path / "model.safetensors", tmp_path / "config.json", state_dict


@pytest.mark.parametrize("kind", ["sit", "dit"])
def test_converter_maps_every_original_key(kind, tmp_path):
    checkpoint, config, original = _original_1d_checkpoint(tmp_path, kind)
    convert = convert_sit_checkpoint if kind == "sit" else convert_dit_checkpoint
    model = convert(checkpoint, config)
    converted = model.state_dict()
    assert len(converted) == len(original)
    assert torch.equal(converted["proj_in.weight"], original["x_embedder.weight"])
    assert torch.equal(converted["blocks.1.attn.qkv_proj.bias"], original["blocks.1.attn.qkv.bias"])
    assert torch.equal(converted["blocks.0.modulation.weight"], original["blocks.0.adaLN_modulation.1.weight"])
    assert torch.equal(converted["time_embedding.linear_2.weight"], original["t_embedder.mlp.2.weight"])
    assert torch.equal(converted["pos_embed"], original["pos_embed"])


@torch.no_grad()
def test_sit_with_qk_norm(tmp_path):
    """timm's qk-norm (affine LayerNorm over the head dimension) is converted and changes the output."""
    checkpoint, config, original = _original_1d_checkpoint(tmp_path, "sit", qk_norm=True)
    model = convert_sit_checkpoint(checkpoint, config)
    assert model.config.qk_norm and isinstance(model.blocks[0].attn.q_norm, torch.nn.LayerNorm)
    assert torch.equal(model.blocks[1].attn.k_norm.bias, original["blocks.1.attn.k_norm.bias"])
    inputs = _inputs_1d(model)
    plain = SiTTransformer1DModel(**{**model.config, "qk_norm": False})
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if "_norm." not in k})
    assert not torch.allclose(model(*inputs).sample, plain(*inputs).sample)


def test_converter_reads_training_checkpoints(tmp_path):
    checkpoint, config, original = _original_1d_checkpoint(tmp_path, "sit")
    wrapped = tmp_path / "checkpoint.pt"
    torch.save(
        {"ema": {f"_orig_mod.{key}": value for key, value in original.items()}, "step": torch.tensor(3)}, wrapped
    )
    model = convert_sit_checkpoint(wrapped, config, inner_key="ema")
    assert torch.equal(model.state_dict()["final_layer.linear.bias"], original["final_layer.linear.bias"])


def test_converter_errors_name_the_problem(tmp_path):
    checkpoint, config, original = _original_1d_checkpoint(tmp_path, "sit")
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
    checkpoint, config, _ = _original_1d_checkpoint(tmp_path, "dit")
    output = tmp_path / "converted"
    cli_main(["convert", "dit", "--checkpoint", str(checkpoint), "--config", str(config), "--output", str(output)])
    assert json.loads((output / "config.json").read_text())["_class_name"] == "DiTTransformer1DModel"
    model = DiTTransformer1DModel.from_pretrained(output)
    assert torch.equal(
        model.state_dict()["blocks.0.attn.out_proj.weight"],
        convert_dit_checkpoint(checkpoint, config).state_dict()["blocks.0.attn.out_proj.weight"],
    )
    with pytest.raises(ValueError, match="--preset, or both --checkpoint and --config"):
        cli_main(["convert", "dit", "--checkpoint", str(checkpoint), "--output", str(output)])


def test_vitok_dit_converter(tmp_path):
    model = MODELS["vitok_dit"]()
    rename = {"proj_in.": "input_proj.", "register_tokens": "reg_token", "time_embedding.linear_1.": "time_embedder.0.",
              "time_embedding.linear_2.": "time_embedder.2.", "class_embedding.": "class_embedder.",
              "head_modulation_proj.": "head_mod_proj.1.", "modulation_proj.": "mod_proj.1.", ".q_norm.": ".norm_q.", ".k_norm.": ".norm_k."}  # fmt: skip
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
    inputs = _inputs("vitok_dit", model)
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


def test_eager_float32_attention_matches_sdpa():
    from hf_vtok.modules import Attention

    attention = Attention(16, 2, qkv_bias=True, eager_float32=True)
    hidden = torch.randn(2, 5, 16)
    mask = torch.tensor([True, True, True, False, False])[None, None, None].expand(2, 1, 5, 5)
    for attention_mask in (None, mask):
        eager = attention(hidden, attention_mask=attention_mask)
        attention.eager_float32 = False
        torch.testing.assert_close(eager, attention(hidden, attention_mask=attention_mask))
        attention.eager_float32 = True
