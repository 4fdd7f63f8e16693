"""bfloat16 and prepacked linear weights on every family: each parity fixture's model saved and reloaded
with ``from_pretrained(..., dtype=torch.bfloat16)`` (transformers and diffusers alike), and/or with its
linear weights prepacked for oneDNN (``hf_vtok.prepack_linear_weights``), run on the fixture's inputs, and
compared with the original's float32 outputs. Prepacked float32 must stay within the parity tolerance.

The error is reported relative to the largest reference magnitude (``max |bf16 - ref| / max |ref|``)
next to the float32 error; ``pytest -m parity -s tests/test_bf16_and_prepack.py`` prints the table. Bounds are a
few times what bfloat16 (8 mantissa bits, 2^-8 = 0.4 % per rounding) gives on these tiny models.
"""

import copy
import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from hf_vtok import ViTokImageProcessor, prepack_linear_weights
from hf_vtok.models.dit_1d import convert_dit_checkpoint
from hf_vtok.models.flowmo.convert_flowmo_original_to_hf import convert_flowmo_checkpoint, load_original_config
from hf_vtok.models.sit import convert_sit_checkpoint
from hf_vtok.models.v2flow.convert_v2flow_original_to_hf import convert_v2flow_checkpoint
from hf_vtok.models.vitok.convert_vitok_original_to_hf import convert_vitok_checkpoint
from hf_vtok.models.vitok_dit.convert_vitok_dit_original_to_hf import convert_vitok_dit_checkpoint
from tests.models.flowmo.test_flowmo_parity import _width_table
from tests.models.v2flow.test_v2flow_parity import _reference_call
from tests.models.v2flow.test_v2flow_parity import fixture as v2flow_fixture  # noqa: F401 (a pytest fixture)
from tests.testing_utils.generator_parity import fixture_tokenizer

pytestmark = pytest.mark.parity


VARIANTS = ("bfloat16", "float32-prepacked", "bfloat16-prepacked")
PREPACKED_FLOAT32_BOUND = 1e-5  # the parity tolerance


@pytest.fixture(params=VARIANTS)
def variant(request):
    if "prepacked" in request.param and not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN")
    return request.param


def _variant_of(model, folder, variant):
    """The model as ``variant`` runs it: reloaded in bfloat16 and/or with prepacked linear weights."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    if variant.startswith("bfloat16"):
        model.save_pretrained(folder)
        model = type(model).from_pretrained(folder, dtype=torch.bfloat16).eval()
    else:
        model = copy.deepcopy(model)
    if variant.endswith("prepacked"):
        assert prepack_linear_weights(model) > 0
    return model


def _relative_error(actual, expected, valid=None):
    actual, expected = actual.detach().float(), expected.float()
    if valid is not None:
        actual, expected = actual[valid], expected[valid]
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def _compare(family, outputs, variant, bound, valid=None):
    """``outputs``: name -> (float32 result, ``variant``'s result, reference); ``bound`` is for bfloat16."""
    bound = PREPACKED_FLOAT32_BOUND if variant == "float32-prepacked" else bound
    failures = []
    for name, (float32, fast, reference) in outputs.items():
        assert fast.dtype in (torch.bfloat16, torch.float32), f"{family} {name}: {fast.dtype}"
        errors = _relative_error(float32, reference, valid), _relative_error(fast, reference, valid)
        print(f"{family:10s} {name:28s} float32 {errors[0]:.1e}  {variant} {errors[1]:.1e}")
        if not errors[1] <= bound:
            failures.append(f"{name}: {variant} relative error {errors[1]:.3g} > {bound}")
    assert not failures, f"{family}: " + "; ".join(failures)


@torch.no_grad()
def test_vitok(family_parity_dir, tmp_path, variant):
    root = family_parity_dir("vitok")
    architecture = json.loads((root / "original_config.json").read_text())["variant"]
    pp = json.loads((root / "fixture_meta.json").read_text())["pp"]["main"]
    reference = load_file(root / "outputs.safetensors")
    model = convert_vitok_checkpoint(root / "encoder.safetensors", root / "decoder.safetensors", variant=architecture)
    fast = _variant_of(model, tmp_path, variant)
    batch = ViTokImageProcessor.from_original_pp(pp)(
        [Image.open(root / f"input_{index}.png").convert("RGB") for index in (0, 1)], return_tensors="pt"
    )
    results = {}
    for precision, network in (("float32", model), ("fast", fast)):
        encoded = network.encode(**batch, mask_padding=True)
        results[precision] = (encoded.latents, network.decode(encoded, mask_padding=True).sample)
    outputs = {
        name: (results["float32"][index], results["fast"][index], reference[key])
        for index, (name, key) in enumerate((("latents", "z"), ("decoded patches", "decoded_patches")))
    }
    _compare("vitok", outputs, variant, bound=0.05, valid=batch["patch_mask"])


@torch.no_grad()
def test_vitok_dit(family_parity_dir, tmp_path, variant):
    root = family_parity_dir("vitok")
    if not (root / "dit_config.json").is_file():
        pytest.skip(f"no ViTok DiT fixtures under {root}")
    config = json.loads((root / "dit_config.json").read_text())
    reference = load_file(root / "dit_outputs.safetensors")
    outputs = {}
    for name in sorted(key[: -len("_kwargs")] for key in config if key.startswith("dit_") and key.endswith("_kwargs")):
        model = convert_vitok_dit_checkpoint(root / f"{name}.safetensors", variant=config["variant"])
        fast = _variant_of(model, tmp_path / name, variant)
        positions = {}
        if f"{name}_row_idx" in reference:
            positions = {"row_idx": reference[f"{name}_row_idx"], "col_idx": reference[f"{name}_col_idx"]}
        inputs = (reference[f"{name}_z"], reference[f"{name}_t"], reference[f"{name}_context"])
        outputs[f"{name} forward"] = (
            model(*inputs, **positions).sample,
            fast(*inputs, **positions).sample,
            reference[f"{name}_out"],
        )
    _compare("vitok-dit", outputs, variant, bound=0.05)


@torch.no_grad()
def test_flowmo(family_parity_dir, tmp_path, variant):
    root = family_parity_dir("flowmo")
    original = load_original_config(root / "original_config.yaml")
    inputs, reference = load_file(root / "inputs.safetensors"), load_file(root / "outputs.safetensors")
    model = convert_flowmo_checkpoint(
        root / "flowmo_tiny.pth", original_config=original, width_table=_width_table(original)
    )
    fast = _variant_of(model, tmp_path, variant)
    results = {}
    for precision, network in (("float32", model), ("fast", fast)):
        prequant = network.encode(inputs["images"]).prequant_latents
        velocity = network.velocity(
            inputs["dec_x_t"], inputs["dec_t"], conditioning=reference["decoder_code_input"]
        ).sample
        # the sampler from the reference code and noise (an encode in bfloat16 may flip LFQ signs)
        final = network.decode(reference["quantized_code"], noise=inputs["recon_z0"]).sample
        results[precision] = (prequant, velocity, final)
    names = (
        ("encoder code", "encoder_code_prequant"),
        ("decoder velocity", "decoder_velocity"),
        ("reconstruction", "recon_final"),
    )
    outputs = {
        name: (results["float32"][i], results["fast"][i], reference[key]) for i, (name, key) in enumerate(names)
    }
    _compare("flowmo", outputs, variant, bound=0.1)


@pytest.mark.parametrize("family", ["softvq", "maetok"])
@torch.no_grad()
def test_latent_token_tokenizers(family_parity_dir, tmp_path, family, variant):
    root = family_parity_dir(family)
    reference = load_file(root / "outputs.safetensors")
    model = fixture_tokenizer(root).eval()
    fast = _variant_of(model, tmp_path, variant)
    latents_key = "latents_pre_quant" if family == "softvq" else "latents"
    outputs = {}
    encoded = {}
    for network in (model, fast):
        result = network.encode(reference["input_images"])
        encoded[network] = result.unquantized_latents if family == "softvq" else result.latents
    outputs["latents"] = (encoded[model], encoded[fast], reference[latents_key])
    outputs["decoded"] = (
        model.decode(reference["latent_input_random"]).sample,
        fast.decode(reference["latent_input_random"]).sample,
        reference["decoded_from_random_latent"],
    )
    _compare(family, outputs, variant, bound=0.05)


@pytest.mark.parametrize("family", ["sit", "dit"])
@torch.no_grad()
def test_generators(family_parity_dir, tmp_path, family, variant):
    root = family_parity_dir(family)
    reference = load_file(root / "outputs.safetensors")
    convert = convert_sit_checkpoint if family == "sit" else convert_dit_checkpoint
    model = convert(root / "model.safetensors", root / "config.json")
    fast = _variant_of(model, tmp_path, variant)
    inputs = (reference["fwd_x"], reference["fwd_t"], reference["fwd_y"])
    _compare(
        family, {"forward": (model(*inputs).sample, fast(*inputs).sample, reference["fwd_out"])}, variant, bound=0.05
    )


@torch.no_grad()
def test_v2flow(v2flow_fixture, tmp_path, variant):  # noqa: F811 (the parity test's fixture, imported)
    """Every input, size, order and noise from the fixture, as tests/models/v2flow/test_v2flow_parity.py takes
    them (its fixture and its ``_reference_call``), so that another fixture set fits as well."""
    root, reference = v2flow_fixture["root"], v2flow_fixture["outputs"]
    model, _ = convert_v2flow_checkpoint(root / "checkpoint-last.pth", num_attention_heads=v2flow_fixture["heads"])
    fast = _variant_of(model, tmp_path, variant)
    outputs = {}
    for name, key, run in (
        ("pre-quantized", "pre_quant",
         lambda m: m.encode(reference["input_latents"], gumbel_noise=reference["enc_gumbel_noise"]).pre_quantized),
        ("MAR decoder", "mae_decoder_out",
         lambda m: m.decoder(m.encoder(reference["mae_tokens"], reference["mae_mask"], reference["post_quant"]),
                             reference["mae_mask"])),
        ("flow head", "head_out_t_1000",
         lambda m: m.flow_head(reference["head_x"], reference["head_t_1000"], reference["head_c"])),
    ):  # fmt: skip
        outputs[name] = (run(model), run(fast), reference[key])
    # the masked-AR loop with the flow head, from the reference's Gumbel noise, orders and flow noise
    prefix = "recon_lf" if model.config.flow_method == "linear_flow" else "recon_condot"
    predicted = reference[f"{prefix}_mask_to_pred"]
    noise = torch.zeros(reference["input_latents"].shape[0], model.config.num_tokens, model.config.token_dim)
    for index in range(predicted.shape[0]):
        noise[predicted[index].bool()] = reference[f"{prefix}_step{index}_flow_noise"]
    detokenized = [
        _reference_call(v2flow_fixture, network, seed_generator=False, noise=noise).sample for network in (model, fast)
    ]
    outputs["detokenized"] = (*detokenized, reference[f"{prefix}_tokens"])
    _compare("v2flow", outputs, variant, bound=0.05)
