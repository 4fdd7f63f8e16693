"""``GeneratorTesterMixin`` (class-conditional diffusers transformers) and ``PipelineTesterMixin`` /
``ClassConditionalPipelineTesterMixin`` (hf_vtok pipelines), inherited by every generator and pipeline test class.

A transformer's class sets ``model_class`` and writes ``get_init_kwargs()`` / ``get_inputs()``; a pipeline's class
writes ``get_pipeline()`` and ``get_call_kwargs()`` and says what the outputs look like.
"""

import json

import numpy as np
import pytest
import torch
from accelerate import init_empty_weights
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from PIL import Image

from tests.testing_utils.tiny_models import randomize
from tests.testing_utils.tokenizer_tester import clear_device_constructor_cache, relative_error, seeded


def public_diffusers_config(config) -> dict:
    """A diffusers config without its private ``_class_name`` / ``_diffusers_version`` entries."""
    return {key: value for key, value in config.items() if not key.startswith("_")}


class GeneratorTesterMixin:
    """Forward shapes and output class, ``return_dict=False``, save / load, bfloat16, class labels out of range,
    gradient checkpointing, LoRA adapters and meta-device construction of one transformer."""

    model_class: type
    bf16_tolerance = 0.1  # max |bf16 - fp32| / max |fp32| of the output
    lora_target_modules = ("qkv_proj", "out_proj", "fc1", "fc2")

    def get_init_kwargs(self) -> dict:
        raise NotImplementedError

    def get_inputs(self, model, batch_size: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(hidden_states, timestep, class_labels)``."""
        raise NotImplementedError

    def expected_output_shape(self, hidden_states: torch.Tensor) -> tuple[int, ...]:
        return tuple(hidden_states.shape)

    def get_model(self):
        return randomize(self.model_class(**self.get_init_kwargs()))

    @torch.no_grad()
    def test_forward_output_class_and_shape(self):
        model = self.get_model()
        inputs = self.get_inputs(model)
        output = model(*inputs)
        assert isinstance(output, Transformer2DModelOutput)
        assert tuple(output.sample.shape) == self.expected_output_shape(inputs[0])
        assert torch.isfinite(output.sample).all()

    @torch.no_grad()
    def test_return_dict_false(self):
        model = self.get_model()
        inputs = self.get_inputs(model)
        as_tuple = model(*inputs, return_dict=False)
        assert type(as_tuple) is tuple and len(as_tuple) == 1
        assert torch.equal(as_tuple[0], model(*inputs).sample)

    @torch.no_grad()
    def test_save_load_is_bit_identical(self, tmp_path):
        model = self.get_model()
        inputs = self.get_inputs(model)
        expected = model(*inputs).sample
        model.save_pretrained(tmp_path)
        reloaded = self.model_class.from_pretrained(tmp_path).eval()
        assert type(reloaded) is self.model_class
        assert torch.equal(reloaded(*inputs).sample, expected)
        assert public_diffusers_config(reloaded.config) == public_diffusers_config(model.config)

    @torch.no_grad()
    def test_bfloat16_forward(self):
        model = self.get_model()
        inputs = self.get_inputs(model)
        reference = model(*inputs).sample
        half = model.to(torch.bfloat16)(*inputs).sample  # float32 inputs are cast to the model's dtype
        assert half.dtype == torch.bfloat16 and torch.isfinite(half.float()).all()
        error = relative_error(half, reference)
        assert error < self.bf16_tolerance, f"relative error {error:.3g}"

    @pytest.mark.parametrize("label", ["too_large", "negative"])
    @torch.no_grad()
    def test_class_labels_out_of_range(self, label):
        model = self.get_model()
        hidden, timestep, labels = self.get_inputs(model)
        bad = model.config.num_classes + 1 if label == "too_large" else -1  # num_classes is the null class
        labels = labels.clone()
        labels[-1] = bad
        with pytest.raises(ValueError, match=rf"class_labels .*{bad}.* out of range"):
            model(hidden, timestep, labels)

    def test_gradient_checkpointing_gives_the_same_gradients(self):
        model = self.get_model()
        inputs = self.get_inputs(model)
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

    def test_lora_adapter_round_trip(self, tmp_path):
        peft = pytest.importorskip("peft")
        model = self.get_model()
        inputs = self.get_inputs(model)
        with torch.no_grad():
            base = model(*inputs).sample
        model.add_adapter(peft.LoraConfig(r=2, lora_alpha=2, target_modules=list(self.lora_target_modules)))
        with torch.no_grad():
            assert torch.equal(model(*inputs).sample, base)  # LoRA B starts at zero
            for key, parameter in model.named_parameters():
                if "lora_B" in key:
                    parameter.normal_(0, 0.1)
            adapted = model(*inputs).sample
        assert not torch.allclose(adapted, base)
        model.save_lora_adapter(tmp_path)
        fresh = self.get_model()
        fresh.load_lora_adapter(tmp_path, weight_name="pytorch_lora_weights.safetensors", prefix=None)
        with torch.no_grad():
            torch.testing.assert_close(fresh(*inputs).sample, adapted)

    @pytest.mark.parametrize("build", ["meta_device", "init_empty_weights"])
    def test_construction_without_memory(self, build):
        clear_device_constructor_cache()  # see TokenizerTesterMixin._assert_built_empty
        expected = {key: value.shape for key, value in self.model_class(**self.get_init_kwargs()).state_dict().items()}
        context = torch.device("meta") if build == "meta_device" else init_empty_weights(include_buffers=True)
        with context:
            model = self.model_class(**self.get_init_kwargs())
        tensors = [*model.parameters(), *model.buffers()]
        assert tensors and all(tensor.is_meta for tensor in tensors)
        assert {key: value.shape for key, value in model.state_dict().items()} == expected


class PipelineTesterMixin:
    """``output_type`` "pt" / "np" / "pil" / "latent", same seed -> same images, ``return_dict=False``, save / load
    and bfloat16 of one tiny pipeline. ``pt`` is a ``[B, 3, H, W]`` tensor and ``np`` a ``[B, H, W, 3]`` array in
    [0, 1], as in diffusers."""

    pipeline_class: type
    components = ("tokenizer", "transformer", "scheduler")  # what model_index.json must name
    bf16_tolerance = 0.05  # max |bf16 - fp32| of the images, which lie in [0, 1]

    def get_pipeline(self):
        raise NotImplementedError

    def get_call_kwargs(self) -> dict:
        """What a call takes besides ``generator``, ``output_type`` and ``return_dict`` (a batch of 2)."""
        raise NotImplementedError

    def expected_image_size(self) -> tuple[int, int]:
        """``(height, width)`` of the images."""
        raise NotImplementedError

    def expected_latents_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    batch_size = 2

    def _images(self, pipe, seed: int = 0, **kwargs):
        return pipe(**self.get_call_kwargs(), generator=seeded(seed), **kwargs).images

    @torch.no_grad()
    def test_output_type_pt(self):
        images = self._images(self.get_pipeline(), output_type="pt")
        assert isinstance(images, torch.Tensor) and images.dtype == torch.float32, type(images)
        assert tuple(images.shape) == (self.batch_size, 3, *self.expected_image_size())
        assert images.min() >= 0 and images.max() <= 1

    @torch.no_grad()
    def test_output_type_np(self):
        pipe = self.get_pipeline()
        images = self._images(pipe, output_type="np")
        assert isinstance(images, np.ndarray), type(images)
        assert images.shape == (self.batch_size, *self.expected_image_size(), 3)
        assert np.array_equal(images, self._images(pipe, output_type="pt").permute(0, 2, 3, 1).numpy())

    @torch.no_grad()
    def test_output_type_pil(self):
        pipe = self.get_pipeline()
        images = self._images(pipe, output_type="pil")
        height, width = self.expected_image_size()
        assert len(images) == self.batch_size and all(isinstance(image, Image.Image) for image in images)
        assert all(image.size == (width, height) and image.mode == "RGB" for image in images)
        pixels = np.stack([np.asarray(image, dtype=np.float32) / 255 for image in images])
        reference = torch.stack(list(self._images(pipe, output_type="pt"))).permute(0, 2, 3, 1).numpy()
        assert np.abs(pixels - reference).max() <= 1 / 255 + 1e-6

    @torch.no_grad()
    def test_output_type_latent(self):
        latents = self._images(self.get_pipeline(), output_type="latent")
        assert isinstance(latents, torch.Tensor) and tuple(latents.shape) == self.expected_latents_shape()
        assert torch.isfinite(latents).all()

    @torch.no_grad()
    def test_same_seed_same_images(self):
        pipe = self.get_pipeline()
        first = self._images(pipe, output_type="latent")
        assert torch.equal(self._images(pipe, output_type="latent"), first)
        assert not torch.equal(self._images(pipe, seed=1, output_type="latent"), first)

    @torch.no_grad()
    def test_return_dict_false(self):
        pipe = self.get_pipeline()
        as_tuple = pipe(**self.get_call_kwargs(), generator=seeded(0), output_type="latent", return_dict=False)
        assert type(as_tuple) is tuple and len(as_tuple) == 1
        assert torch.equal(as_tuple[0], self._images(pipe, output_type="latent"))

    @torch.no_grad()
    def test_save_load_is_bit_identical(self, tmp_path):
        pipe = self.get_pipeline()
        expected = self._images(pipe, output_type="latent")
        pipe.save_pretrained(tmp_path)
        index = json.loads((tmp_path / "model_index.json").read_text())
        assert index["_class_name"] == self.pipeline_class.__name__ and set(index) >= set(self.components)
        reloaded = self.pipeline_class.from_pretrained(tmp_path)
        reloaded.set_progress_bar_config(disable=True)
        for name in self.components:
            assert type(getattr(reloaded, name)) is type(getattr(pipe, name)), name
        assert torch.equal(self._images(reloaded, output_type="latent"), expected)
        assert np.array_equal(
            np.stack([np.asarray(image) for image in self._images(reloaded, output_type="pil")]),
            np.stack([np.asarray(image) for image in self._images(pipe, output_type="pil")]),
        )

    @torch.no_grad()
    def test_bfloat16_from_pretrained(self, tmp_path):
        pipe = self.get_pipeline()
        reference = np.stack([np.asarray(image) for image in self._images(pipe, output_type="pil")]) / 255
        pipe.save_pretrained(tmp_path)
        half = self.pipeline_class.from_pretrained(tmp_path, dtype=torch.bfloat16)
        half.set_progress_bar_config(disable=True)
        for name, component in half.components.items():
            if isinstance(component, torch.nn.Module):
                assert any(p.dtype == torch.bfloat16 for p in component.parameters()), f"{name} is not bfloat16"
        images = np.stack([np.asarray(image) for image in self._images(half, output_type="pil")]) / 255
        assert np.abs(images - reference).max() < self.bf16_tolerance


class ClassConditionalPipelineTesterMixin(PipelineTesterMixin):
    """A class-conditional pipeline (``class_labels`` first) refuses labels out of range before any compute."""

    def get_call_kwargs(self):
        return dict(class_labels=[1, 4], num_inference_steps=3, guidance_scale=2.0)

    @pytest.mark.parametrize("label", ["too_large", "negative"])
    def test_class_labels_out_of_range_fail_before_any_compute(self, label, monkeypatch):
        pipe = self.get_pipeline()
        monkeypatch.setattr(pipe.transformer, "forward", lambda *a, **k: pytest.fail("the transformer ran"))
        bad = pipe.transformer.config.num_classes if label == "too_large" else -1  # the null class is no label
        kwargs = {**self.get_call_kwargs(), "class_labels": [1, bad]}
        with pytest.raises(ValueError, match=rf"class_labels \[{bad}\] are out of range"):
            pipe(**kwargs, output_type="latent")
