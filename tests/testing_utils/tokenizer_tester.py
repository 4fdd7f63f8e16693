"""``TokenizerTesterMixin``: the tokenizer contract of ../shared/DESIGN.md, inherited by every family's test class.

A family's class sets ``model_class``, writes ``get_config()`` and ``get_inputs()``, and states what differs
between families with the class attributes (``discrete``, ``stochastic_decoder``, ``input_name``, the dtypes a
bfloat16 model returns) and the ``*_kwargs`` hooks (a seeded generator for stochastic steps).
"""

import copy
import inspect
import io
import re
import shutil

import numpy as np
import pytest
import torch
import torch._dynamo
import torch.utils._device
from accelerate import init_empty_weights
from PIL import ExifTags, Image, ImageOps
from transformers import AutoConfig, AutoImageProcessor, AutoModel

from hf_vtok import FlowMoModel, ViTokConfig, ViTokModel
from hf_vtok.modeling_outputs import (
    SequenceLatentDistribution,
    VisualTokenizerDecoderOutput,
    VisualTokenizerEncoderOutput,
)
from tests.testing_utils.tiny_models import TINY_VITOK_VARIANT, tiny_flowmo_model

BAD_SHAPES = ("fewer_dims", "more_dims", "extra_channel")


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_same_outputs(actual, expected, name: str = "output") -> None:
    """Bit-identical model outputs: tensors, and tuples / lists / dicts / ``ModelOutput``s of them."""
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys(), f"{name}: keys {list(actual)} vs {list(expected)}"
        for key in expected:
            assert_same_outputs(actual[key], expected[key], f"{name}.{key}")
    elif isinstance(expected, (tuple, list)):
        assert isinstance(actual, (tuple, list)) and len(actual) == len(expected), f"{name}: length differs"
        for index, (left, right) in enumerate(zip(actual, expected)):
            assert_same_outputs(left, right, f"{name}[{index}]")
    elif isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor) and actual.dtype == expected.dtype, f"{name}: dtype differs"
        assert torch.equal(actual, expected), f"{name}: values differ"
    else:
        assert actual == expected, f"{name}: {actual!r} vs {expected!r}"


def assert_close_outputs(actual, expected, tolerance: float, name: str = "output") -> None:
    """``assert_same_outputs`` with float tensors allowed ``relative_error <= tolerance`` (integers stay exact)."""
    if isinstance(expected, SequenceLatentDistribution):
        actual, expected = actual.distribution.parameters, expected.distribution.parameters
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys(), f"{name}: keys {list(actual)} vs {list(expected)}"
        for key in expected:
            assert_close_outputs(actual[key], expected[key], tolerance, f"{name}.{key}")
    elif isinstance(expected, (tuple, list)):
        assert isinstance(actual, (tuple, list)) and len(actual) == len(expected), f"{name}: length differs"
        for index, (left, right) in enumerate(zip(actual, expected)):
            assert_close_outputs(left, right, tolerance, f"{name}[{index}]")
    elif isinstance(expected, torch.Tensor) and expected.is_floating_point():
        assert isinstance(actual, torch.Tensor) and actual.dtype == expected.dtype, f"{name}: dtype differs"
        error = relative_error(actual, expected) if expected.abs().max() > 0 else actual.abs().max().item()
        assert error <= tolerance, f"{name}: relative error {error:.3g} > {tolerance}"
    else:
        assert_same_outputs(actual, expected, name)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``max |actual - expected| / max |expected|``."""
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


def clear_device_constructor_cache() -> None:
    """Forget torch's cached set of factories that ``with torch.device(...)`` redirects (see the callers)."""
    torch.utils._device._device_constructors.cache_clear()


def public_config(config) -> dict:
    """A transformers config as a dict, without private entries (``_name_or_path``, ...)."""
    return {key: value for key, value in config.to_dict().items() if not key.startswith("_")}


class TokenizerTesterMixin:
    """Encode / decode shapes and output classes, ``return_dict=False``, save / load, bfloat16,
    ``torch.compile(fullgraph=True)``, meta-device construction and bad-input errors of one family."""

    model_class: type
    input_name = "pixel_values"  # V²Flow encodes DC-AE ``latents``
    discrete = False  # encode returns ``image_tokens`` [B, N] ids and decode takes them
    stochastic_decoder = False  # decode draws noise: reproducible through ``generator``
    bf16_latents_dtype = torch.bfloat16  # the dtype of ``encode(...).latents`` of a bfloat16 model
    bf16_sample_dtype = torch.bfloat16  # the dtype of ``decode(...).sample`` of a bfloat16 model
    bf16_tolerance = 0.05  # max |bf16 - fp32| / max |fp32| of the latents and of the decoded sample
    bf16_token_agreement = 0.8  # share of equal ids (discrete families: a rounding can flip a bit)
    compile_tolerance = 1e-5
    decoder_hidden_states_in_forward = True  # forward's decoder runs once (not a sampler loop)
    supports_tiling = False  # enable_tiling() works (else diffusers' NotImplementedError)
    slicing_tolerance = 1e-5  # relative error of a sliced encode / decode (see test_slicing_matches_the_batch)

    # -- what a family provides ---------------------------------------------------------------------
    def get_config(self):
        raise NotImplementedError

    def get_inputs(self, batch_size: int = 2) -> torch.Tensor:
        """What ``encode`` takes as ``input_name``."""
        raise NotImplementedError

    def expected_latents_shape(self, batch_size: int) -> tuple[int, ...]:
        raise NotImplementedError

    def expected_image_tokens_shape(self, batch_size: int) -> tuple[int, ...] | None:
        return None

    def get_model(self):
        torch.manual_seed(0)
        return self.model_class(self.get_config()).eval()

    def get_processor(self):
        """The family's image processor (saved next to the model), or ``None``."""
        return None

    def get_image_processor(self):
        """The processor of the family's images (V²Flow: its DC-AE's), for the processor checks; ``None``: none."""
        return self.get_processor()

    def other_family_model(self):
        """A tiny model of another family whose weights share no name with this one's: FlowMo, or ViTok for FlowMo."""
        if self.model_class is FlowMoModel:
            return ViTokModel(ViTokConfig.from_variant(TINY_VITOK_VARIANT)).eval()
        return tiny_flowmo_model()

    def encode_kwargs(self) -> dict:
        """Extra arguments of every ``encode`` call (fresh on each call, e.g. a seeded generator)."""
        return {}

    def decode_kwargs(self) -> dict:
        return {"generator": seeded(1)} if self.stochastic_decoder else {}

    def forward_kwargs(self) -> dict:
        """Extra arguments of ``model(...)``: one generator serves both steps: the encoder's (it draws first)."""
        return {**self.decode_kwargs(), **self.encode_kwargs()}

    def slicing_decode_kwargs(self, batch_size: int) -> dict:
        """``decode`` arguments under which a sliced decode must equal the batched one (all noise given)."""
        return self.decode_kwargs()

    def compile_kwargs(self) -> dict:
        """Arguments of the compiled ``encode`` (tensors only: a graph takes no ``torch.Generator``)."""
        return {}

    def bad_inputs(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inputs ``encode`` must refuse with a ValueError naming their shape."""
        return {
            "fewer_dims": inputs[0],
            "more_dims": inputs[None],
            "extra_channel": torch.cat([inputs, inputs[:, :1]], dim=1),
        }

    def bad_latents(self, latents: torch.Tensor) -> dict[str, torch.Tensor]:
        """Latents ``decode`` must refuse with a ValueError naming their shape."""
        return {
            "fewer_dims": latents[0],
            "more_dims": latents[None],
            "extra_channel": torch.cat([latents, latents[..., :1]], dim=-1)
            if latents.dim() == 3
            else torch.cat([latents, latents[:, :1]], dim=1),
        }

    # -- helpers --------------------------------------------------------------------------------------
    def _encode(self, model, inputs, **kwargs):
        return model.encode(**{self.input_name: inputs}, **self.encode_kwargs(), **kwargs)

    def _decode(self, model, latents=None, **kwargs):
        return model.decode(latents, **self.decode_kwargs(), **kwargs)

    # -- encode / decode / forward ------------------------------------------------------------------
    @torch.no_grad()
    def test_encode_output_class_and_shapes(self):
        model, inputs = self.get_model(), self.get_inputs()
        encoded = self._encode(model, inputs)
        assert isinstance(encoded, VisualTokenizerEncoderOutput), type(encoded)
        assert tuple(encoded.latents.shape) == self.expected_latents_shape(len(inputs))
        assert encoded.latents.is_floating_point() and torch.isfinite(encoded.latents).all()
        assert encoded.latent is encoded.latents  # diffusers' EncoderOutput spelling
        if self.discrete:
            assert encoded.image_tokens.dtype == torch.long
            assert tuple(encoded.image_tokens.shape) == self.expected_image_tokens_shape(len(inputs))
        else:
            assert encoded.image_tokens is None

    @torch.no_grad()
    def test_decode_output_class_and_shape(self):
        model, inputs = self.get_model(), self.get_inputs()
        encoded = self._encode(model, inputs)
        decoded = self._decode(model, encoded.latents)
        assert isinstance(decoded, VisualTokenizerDecoderOutput), type(decoded)
        assert tuple(decoded.sample.shape) == tuple(inputs.shape)
        assert torch.isfinite(decoded.sample).all()
        assert torch.equal(self._decode(model, encoded).sample, decoded.sample)  # the encoder output as is
        if self.discrete:
            from_tokens = self._decode(model, image_tokens=encoded.image_tokens).sample
            assert torch.equal(from_tokens, decoded.sample)

    @torch.no_grad()
    def test_decode_is_reproducible(self):
        model, inputs = self.get_model(), self.get_inputs()
        latents = self._encode(model, inputs).latents
        first = self._decode(model, latents).sample
        assert torch.equal(self._decode(model, latents).sample, first)
        if self.stochastic_decoder:
            other = model.decode(latents, **{**self.decode_kwargs(), "generator": seeded(2)}).sample
            assert not torch.equal(other, first), "the generator does not reach the decoder's noise"

    @torch.no_grad()
    def test_forward_returns_reconstruction_and_latents(self):
        model, inputs = self.get_model(), self.get_inputs()
        output = model(**{self.input_name: inputs}, **self.forward_kwargs())
        assert tuple(output.sample.shape) == tuple(inputs.shape)
        assert torch.equal(output.latents, self._encode(model, inputs).latents)
        assert torch.equal(model(**{self.input_name: inputs}, **self.forward_kwargs()).sample, output.sample)

    @torch.no_grad()
    def test_return_dict_false_gives_the_dataclass_fields(self):
        model, inputs = self.get_model(), self.get_inputs()
        encoded = self._encode(model, inputs)
        as_tuple = self._encode(model, inputs, return_dict=False)
        assert type(as_tuple) is tuple
        assert_same_outputs(as_tuple, encoded.to_tuple(), "encode")
        assert_same_outputs(as_tuple, tuple(value for value in encoded.values()), "encode")
        decoded = self._decode(model, encoded.latents)
        decoded_tuple = self._decode(model, encoded.latents, return_dict=False)
        assert type(decoded_tuple) is tuple
        assert_same_outputs(decoded_tuple, decoded.to_tuple(), "decode")
        output = model(**{self.input_name: inputs}, **self.forward_kwargs())
        output_tuple = model(**{self.input_name: inputs}, **self.forward_kwargs(), return_dict=False)
        assert type(output_tuple) is tuple
        assert_same_outputs(output_tuple, output.to_tuple(), "forward")

    # -- save / load, dtypes, compile -------------------------------------------------------------
    @torch.no_grad()
    def test_save_and_auto_load_are_bit_identical(self, tmp_path):
        model, inputs = self.get_model(), self.get_inputs()
        model.save_pretrained(tmp_path)
        processor = self.get_processor()
        if processor is not None:
            processor.save_pretrained(tmp_path)
            reloaded_processor = AutoImageProcessor.from_pretrained(tmp_path)
            assert type(reloaded_processor) is type(processor)
            assert reloaded_processor.to_dict() == processor.to_dict()
        config = AutoConfig.from_pretrained(tmp_path)
        assert type(config) is type(model.config) and public_config(config) == public_config(model.config)
        loaded = AutoModel.from_pretrained(tmp_path)
        assert type(loaded) is self.model_class and not loaded.training
        assert_same_outputs(loaded.state_dict(), model.state_dict(), "state_dict")
        encoded = self._encode(model, inputs)
        assert_same_outputs(self._encode(loaded, inputs), encoded, "encode")
        assert torch.equal(self._decode(loaded, encoded.latents).sample, self._decode(model, encoded.latents).sample)
        assert torch.equal(
            loaded(**{self.input_name: inputs}, **self.forward_kwargs()).sample,
            model(**{self.input_name: inputs}, **self.forward_kwargs()).sample,
        )

    @torch.no_grad()
    def test_bfloat16_runs_and_is_close_to_float32(self, tmp_path):
        model, inputs = self.get_model(), self.get_inputs()
        encoded = self._encode(model, inputs)
        reference = self._decode(model, encoded.latents).sample
        model.save_pretrained(tmp_path)
        half = type(model).from_pretrained(tmp_path, dtype=torch.bfloat16)
        assert half.dtype == torch.bfloat16
        half_encoded = self._encode(half, inputs)  # float32 inputs are cast to the model's dtype
        assert half_encoded.latents.dtype == self.bf16_latents_dtype
        if self.discrete:
            agreement = (half_encoded.image_tokens == encoded.image_tokens).float().mean().item()
            assert agreement >= self.bf16_token_agreement, f"{agreement:.0%} of the ids agree"
        else:
            error = relative_error(half_encoded.latents, encoded.latents)
            assert error < self.bf16_tolerance, f"latents: relative error {error:.3g}"
        # the float32 latents through the bfloat16 decoder: its own error, not the encoder's
        sample = self._decode(half, encoded.latents.to(self.bf16_latents_dtype)).sample
        assert sample.dtype == self.bf16_sample_dtype and torch.isfinite(sample.float()).all()
        error = relative_error(sample, reference)
        assert error < self.bf16_tolerance, f"sample: relative error {error:.3g}"

    @pytest.mark.slow
    @torch.no_grad()
    def test_compiled_encode_equals_eager(self):
        model, inputs = self.get_model(), self.get_inputs()
        assert model.validate_inputs  # the input checks are on: they must neither break the graph nor sync
        kwargs = {self.input_name: inputs, **self.compile_kwargs()}
        torch._dynamo.reset()
        try:
            compiled = torch.compile(model.encode, fullgraph=True)(**kwargs)
        finally:
            torch._dynamo.reset()
        eager = model.encode(**kwargs)
        assert type(compiled) is type(eager) and compiled.keys() == eager.keys()
        for key, value in eager.items():
            actual = compiled[key]
            if isinstance(value, SequenceLatentDistribution):  # compare the distributions' parameters
                actual, value = actual.distribution.parameters, value.distribution.parameters
            if value.is_floating_point():
                torch.testing.assert_close(actual, value, atol=self.compile_tolerance, rtol=0, msg=key)
            else:
                assert torch.equal(actual, value), key

    # -- construction ---------------------------------------------------------------------------------
    def _assert_built_empty(self, build):
        config = self.get_config()
        # transformers' from_pretrained swaps torch.linspace for a CPU-only one while torch first caches its list of
        # device-context factories: after any load in the process, linspace would ignore torch.device("meta")
        clear_device_constructor_cache()
        expected = {key: value.shape for key, value in self.model_class(config).state_dict().items()}
        with build():
            model = self.model_class(config)
        tensors = [*model.parameters(), *model.buffers()]
        assert tensors and all(tensor.is_meta for tensor in tensors)
        assert {key: value.shape for key, value in model.state_dict().items()} == expected

    def test_construction_on_the_meta_device(self):
        self._assert_built_empty(lambda: torch.device("meta"))

    def test_construction_under_init_empty_weights(self):
        self._assert_built_empty(lambda: init_empty_weights(include_buffers=True))

    # -- bad input ----------------------------------------------------------------------------------------
    @pytest.mark.parametrize("case", BAD_SHAPES)
    @torch.no_grad()
    def test_encode_rejects_a_bad_shape_naming_it(self, case):
        model, inputs = self.get_model(), self.get_inputs()
        bad = self.bad_inputs(inputs)[case]
        with pytest.raises(ValueError, match=re.escape(str(tuple(bad.shape)))):
            self._encode(model, bad)

    @pytest.mark.parametrize("case", BAD_SHAPES)
    @torch.no_grad()
    def test_decode_rejects_bad_latents_naming_their_shape(self, case):
        model, inputs = self.get_model(), self.get_inputs()
        bad = self.bad_latents(self._encode(model, inputs).latents)[case]
        with pytest.raises(ValueError, match=re.escape(str(tuple(bad.shape)))):
            self._decode(model, bad)

    @pytest.mark.parametrize("value", ("nan", "inf", "-inf"))
    @torch.no_grad()
    def test_encode_rejects_non_finite_inputs(self, value):
        """NaN / infinite inputs would give NaN latents (and normal-looking token ids); the check names them, and
        ``validate_inputs = False`` (speed-critical loops) skips it."""
        model, inputs = self.get_model(), self.get_inputs()
        bad = inputs.clone()
        bad[0, 0, 0] = float(value)
        with pytest.raises(ValueError, match=rf"{self.input_name} contains (NaN|infinite) values"):
            self._encode(model, bad)
        model.validate_inputs = False
        self._encode(model, bad)  # no check, no error

    @torch.no_grad()
    def test_encode_rejects_integer_inputs(self):
        model, inputs = self.get_model(), self.get_inputs()
        as_uint8 = ((inputs.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        for validate in (True, False):  # the dtype check costs nothing: always on
            model.validate_inputs = validate
            with pytest.raises(ValueError, match=rf"{self.input_name} must be (a )?floating point.*uint8"):
                self._encode(model, as_uint8)

    @torch.no_grad()
    def test_encode_rejects_values_outside_the_input_range(self):
        model, inputs = self.get_model(), self.get_inputs()
        if model.input_value_range is None:
            pytest.skip(f"{self.model_class.__name__} takes {self.input_name} of no fixed range (finite only)")
        low, high = model.input_value_range
        assert (low, high) == (-1.0, 1.0)
        for bad in ((inputs + 1) * 127.5, torch.full_like(inputs, -5.0), inputs * 13):  # [0, 255] floats, ...
            with pytest.raises(ValueError, match=r"outside the expected \[-1, 1\]"):
                self._encode(model, bad)
        # within the tolerance (resampling overshoot) is accepted; validate_inputs = False skips the check
        self._encode(model, inputs.clamp(-1, 1) * (1 + 0.9 * model.input_value_tolerance))
        model.validate_inputs = False
        self._encode(model, (inputs + 1) * 127.5)

    @torch.no_grad()
    def test_empty_batch_gives_empty_outputs(self):
        model, inputs = self.get_model(), self.get_inputs()
        encoded = self._encode(model, inputs[:0])
        assert tuple(encoded.latents.shape) == self.expected_latents_shape(0)
        decoded = self._decode(model, encoded.latents)
        assert tuple(decoded.sample.shape) == (0, *inputs.shape[1:])
        if self.discrete:
            assert tuple(encoded.image_tokens.shape) == self.expected_image_tokens_shape(0)
            from_tokens = self._decode(model, image_tokens=encoded.image_tokens)
            assert tuple(from_tokens.sample.shape) == (0, *inputs.shape[1:])
        assert tuple(model(**{self.input_name: inputs[:0]}, **self.forward_kwargs()).sample.shape) == tuple(
            decoded.sample.shape
        )

    def test_loading_another_familys_checkpoint_is_an_error(self, tmp_path):
        """Another family's folder, a config.json whose model_type was edited, or another family's weights under
        this family's config: a ValueError naming both types, never a model of random weights."""
        other = self.other_family_model()
        other.save_pretrained(tmp_path / "other")
        own_type, other_type = self.model_class.config_class.model_type, type(other).config_class.model_type
        name, config = self.model_class.__name__, self.get_config()
        both = (
            rf"model_type '{other_type}' but {type(config).__name__} is the config of '{own_type}' models \({name}\)"
        )
        with pytest.raises(ValueError, match=rf"other': config.json declares {both}"):
            self.model_class.from_pretrained(tmp_path / "other")
        with pytest.raises(ValueError, match=both):
            type(config).from_dict(other.config.to_dict())
        config_file = tmp_path / "other" / "config.json"
        config_file.write_text(config_file.read_text().replace(f'"{other_type}"', f'"{own_type}"'))
        with pytest.raises(ValueError, match=rf"saved by {type(other).__name__} \(a '{other_type}' model\)"):
            AutoModel.from_pretrained(tmp_path / "other")
        self.get_model().save_pretrained(tmp_path / "own")
        shutil.copy(tmp_path / "other" / "model.safetensors", tmp_path / "own" / "model.safetensors")
        with pytest.raises(
            ValueError, match=rf"(\d+) of the \1 weights of {name} \(a '{own_type}' model\) are missing"
        ):
            self.model_class.from_pretrained(tmp_path / "own")

    # -- processor input ----------------------------------------------------------------------------------
    def _image_processor(self):
        processor = self.get_image_processor()
        if processor is None:
            pytest.skip(f"{self.model_class.__name__} takes no images")
        return processor

    @torch.no_grad()
    def test_processor_applies_the_exif_orientation_of_pil_images(self, tmp_path):
        """A phone photo opened with PIL (EXIF orientation 6: stored sideways) is encoded upright, as from its path;
        ``do_exif_transpose=False`` keeps it as stored, and is saved with the processor."""
        processor = self._image_processor()
        stored = Image.fromarray(np.random.RandomState(0).randint(0, 256, (16, 24, 3), dtype=np.uint8))
        exif = Image.Exif()
        exif[ExifTags.Base.Orientation] = 6
        buffer = io.BytesIO()
        stored.save(buffer, format="PNG", exif=exif)
        photo = Image.open(io.BytesIO(buffer.getvalue()))
        (tmp_path / "photo.png").write_bytes(buffer.getvalue())
        upright = ImageOps.exif_transpose(photo)
        assert upright.size == (16, 24)
        expected = processor(upright, return_tensors="pt")["pixel_values"]
        assert torch.equal(processor(photo, return_tensors="pt")["pixel_values"], expected)
        assert torch.equal(processor(str(tmp_path / "photo.png"), return_tensors="pt")["pixel_values"], expected)
        as_stored = processor(photo, do_exif_transpose=False, return_tensors="pt")["pixel_values"]
        assert torch.equal(as_stored, processor(stored, return_tensors="pt")["pixel_values"])
        assert not torch.equal(as_stored, expected)
        off = type(processor)(**{**processor.to_dict(), "do_exif_transpose": False})
        off.save_pretrained(tmp_path / "off")
        reloaded = type(processor).from_pretrained(tmp_path / "off")
        assert reloaded.do_exif_transpose is False
        assert torch.equal(reloaded(photo, return_tensors="pt")["pixel_values"], as_stored)

    def test_processor_rejects_bad_arrays_naming_them(self):
        processor = self._image_processor()
        with pytest.raises(ValueError, match=r"1, 3 or 4 channels.*\(32, 40, 2\)"):
            processor(np.zeros((32, 40, 2), dtype=np.uint8), return_tensors="pt")
        with pytest.raises(ValueError, match=r"1, 3 or 4 channels.*\(2, 32, 40\)"):
            processor(torch.zeros(2, 32, 40), do_rescale=False, return_tensors="pt")
        floats = np.random.RandomState(0).rand(32, 40, 3).astype(np.float32)
        for bad, rescale, expected in (
            (floats * 24 - 11, False, r"from -1\d.* outside the expected \[0, 1\]"),  # -11 .. 13
            (np.full_like(floats, -5.0), True, r"from -5 to -5, outside the expected \[0, 255\]"),
            (floats * 300, True, r"outside the expected \[0, 255\]"),
        ):
            with pytest.raises(ValueError, match=expected):
                processor(bad, do_rescale=rescale, return_tensors="pt")
        with pytest.raises(ValueError, match="already in \\[0, 1\\]"):
            processor(floats, return_tensors="pt")

    # -- the transformers / diffusers surface ---------------------------------------------------------
    @torch.no_grad()
    def test_forward_returns_hidden_states(self):
        model, inputs = self.get_model(), self.get_inputs()
        call = {self.input_name: inputs}
        output = model(**call, **self.forward_kwargs(), output_hidden_states=True)
        encoded = self._encode(model, inputs, output_hidden_states=True)
        assert output.hidden_states is not None and len(output.hidden_states) > 1
        assert_same_outputs(output.hidden_states, encoded.hidden_states, "hidden_states")
        if self.decoder_hidden_states_in_forward:
            decoded = self._decode(model, encoded.latents, output_hidden_states=True)
            assert_same_outputs(output.decoder_hidden_states, decoded.hidden_states, "decoder_hidden_states")
        else:
            assert output.decoder_hidden_states is None
        assert model(**call, **self.forward_kwargs()).hidden_states is None
        model.config.output_hidden_states = True  # the default of forward, as in transformers
        assert_same_outputs(model(**call, **self.forward_kwargs()).hidden_states, output.hidden_states, "config")
        assert model(**call, **self.forward_kwargs(), output_hidden_states=False).hidden_states is None

    @torch.no_grad()
    def test_get_input_embeddings_is_the_layer_the_input_enters(self):
        model, inputs = self.get_model(), self.get_inputs()
        embedding = model.get_input_embeddings()
        seen = []
        handle = embedding.register_forward_hook(lambda module, args, output: seen.append(args[0]))
        try:
            self._encode(model, inputs)
        finally:
            handle.remove()
        assert len(seen) == 1, f"the input embedding ran {len(seen)} times in encode"
        # it reads the input itself (maybe cut into patches): the same values
        assert torch.equal(seen[0].flatten().sort().values, inputs.to(seen[0].dtype).flatten().sort().values)
        replacement = copy.deepcopy(embedding)
        model.set_input_embeddings(replacement)
        assert model.get_input_embeddings() is replacement

    @torch.no_grad()
    def test_slicing_matches_the_batch(self):
        """``enable_slicing()`` encodes / decodes one sample at a time. Each sample gets the computation it gets in
        the batch, but a matrix product's rows can round differently with the number of rows it is given (the
        BLAS kernel handles a remainder of rows apart): floats agree to ``slicing_tolerance``, ids exactly."""
        model, inputs = self.get_model(), self.get_inputs(batch_size=3)
        encoded = self._encode(model, inputs, output_hidden_states=True)
        decoded = model.decode(encoded.latents, **self.slicing_decode_kwargs(len(inputs)))
        calls = []
        handle = model.get_input_embeddings().register_forward_hook(lambda *_: calls.append(1))
        model.enable_slicing()
        try:
            assert model.use_slicing
            sliced = self._encode(model, inputs, output_hidden_states=True)
            assert len(calls) == len(inputs), "enable_slicing() did not encode one sample at a time"
            assert_close_outputs(sliced, encoded, self.slicing_tolerance, "sliced encode")
            sliced = model.decode(encoded.latents, **self.slicing_decode_kwargs(len(inputs)))
            assert_close_outputs(sliced, decoded, self.slicing_tolerance, "sliced decode")
        finally:
            handle.remove()
            model.disable_slicing()
        assert not model.use_slicing
        assert_same_outputs(model.decode(encoded.latents, **self.slicing_decode_kwargs(len(inputs))), decoded)

    @torch.no_grad()
    def test_diffusers_retrieve_latents_reads_the_latents(self):
        from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import retrieve_latents

        model, inputs = self.get_model(), self.get_inputs()
        encoded = self._encode(model, inputs)
        assert torch.equal(retrieve_latents(encoded, sample_mode="argmax"), encoded.latents)
        assert torch.equal(retrieve_latents(encoded, generator=seeded(0)), encoded.latents)

    def test_enable_tiling_only_where_the_decoder_takes_tiles(self):
        model = self.get_model()
        if self.supports_tiling:
            model.enable_tiling()
            assert model.use_tiling
            model.disable_tiling()
            assert not model.use_tiling
        else:
            with pytest.raises(NotImplementedError, match="Tiling"):
                model.enable_tiling()

    @torch.no_grad()
    def test_processor_keeps_the_channels_without_convert_rgb(self):
        processor = self.get_processor()
        if processor is None:
            pytest.skip(f"{self.model_class.__name__} takes no images (its pipeline's processor is tested there)")
        rgba = np.random.RandomState(0).randint(0, 256, (32, 40, 4), dtype=np.uint8)
        rgba[..., 3] = 255
        four = {"image_mean": [0.5] * 4, "image_std": [0.5] * 4, "return_tensors": "pt"}
        kept = processor(rgba, do_convert_rgb=False, **four)
        # the raw channels, none composited away: the colours as the RGB image gives them, then the alpha
        colour_and_alpha = _by_channel(kept["pixel_values"], 4)
        assert torch.equal(
            colour_and_alpha[:, :3], _by_channel(processor(rgba, return_tensors="pt")["pixel_values"], 3)
        )
        alpha = colour_and_alpha[:, 3]
        if "patch_mask" in kept:  # NaFlex padding tokens are zeros
            alpha = alpha[kept["patch_mask"]]
        assert torch.equal(alpha, torch.ones_like(alpha))
        gray = processor(
            Image.fromarray(rgba[..., 0]), do_convert_rgb=False, **{**four, "image_mean": [0.5], "image_std": [0.5]}
        )
        assert torch.equal(
            _by_channel(gray["pixel_values"], 1)[:, 0],
            _by_channel(processor(rgba[..., [0, 0, 0]], return_tensors="pt")["pixel_values"], 3)[:, 0],
        )
        with pytest.raises(ValueError, match="4 values"):
            processor(rgba, do_convert_rgb=False, return_tensors="pt")
        with pytest.raises(ValueError, match="CMYK"):
            processor(Image.fromarray(rgba).convert("CMYK"), do_convert_rgb=False, **four)
        with pytest.raises(ValueError, match=r"\[3, 4\] channels"):
            processor([rgba[..., :3], rgba], do_convert_rgb=False, do_normalize=False, return_tensors="pt")
        # a model built for 4 channels takes them; the 3-channel model says what it got
        inputs = {key: value for key, value in kept.items() if key in self._encode_keys()}
        with pytest.raises(ValueError, match=re.escape(str(tuple(kept["pixel_values"].shape)))):
            self.get_model().encode(**inputs)
        config = self.get_config()
        config.num_channels = 4
        assert self.model_class(config).eval().encode(**inputs).latents.shape[0] == 1

    def _encode_keys(self) -> set[str]:
        return set(inspect.signature(self.model_class.encode).parameters)


def _by_channel(pixel_values: torch.Tensor, channels: int) -> torch.Tensor:
    """Processor output with the channels at dim 1: images ``[B, C, H, W]`` as they are, ViTok's patch vectors
    ``[B, N, C*p*p]`` (channel-major) as ``[B, C, N, p*p]``."""
    if pixel_values.dim() == 3:
        return pixel_values.unflatten(-1, (channels, -1)).transpose(1, 2)
    assert pixel_values.shape[1] == channels, tuple(pixel_values.shape)
    return pixel_values
