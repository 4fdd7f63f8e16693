"""``GeneratorTesterMixin`` (class-conditional diffusers transformers) and ``PipelineTesterMixin`` /
``ClassConditionalPipelineTesterMixin`` (hf_vtok pipelines), inherited by every generator and pipeline test class.

A transformer's class sets ``model_class`` and writes ``get_init_kwargs()`` / ``get_inputs()``; a pipeline's class
writes ``get_pipeline()`` and ``get_call_kwargs()`` and says what the outputs look like.

The diffusers sdist ships no test mixins, so the checks its ``ModelTesterMixin``, ``LoraTesterMixin`` and
``PipelineTesterMixin`` run on a model added to diffusers are written here (the sections marked "diffusers"),
adapted to hf_vtok's call signatures. Left out, with the reason: what needs an accelerator (float16 inference,
model / sequential / group CPU offload, ``device_map``, memory checks), attention processors, slicing and
xformers (hf_vtok attention has no processors), optional components and ``num_images_per_prompt`` (the pipelines
have neither: repeat a class label for more images of it), DDUF (removed from diffusers 0.42).
"""

import contextlib
import inspect
import io
import json
import os
import re

import numpy as np
import pytest
import torch
from accelerate import init_empty_weights
from diffusers import AutoModel as DiffusersAutoModel
from diffusers import DiffusionPipeline, ModelMixin
from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN
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
    # max |cast - fp32| / max |fp32| with the weights stored in a low-precision dtype (layerwise casting)
    layerwise_casting_tolerance = {torch.float16: 0.01, torch.float8_e4m3fn: 0.5}

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

    @torch.no_grad()
    def test_class_labels_as_a_column(self):
        """``[B, 1]`` labels (what diffusers' batching of ``[[id], ...]`` gives) are ``[B]`` labels."""
        model = self.get_model()
        hidden, timestep, labels = self.get_inputs(model)
        assert torch.equal(model(hidden, timestep, labels[:, None]).sample, model(hidden, timestep, labels).sample)

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

    # ----------------------------------------------------------------------------------------------
    # diffusers ModelTesterMixin
    @torch.no_grad()
    def test_determinism(self):
        model = self.get_model()
        inputs = self.get_inputs(model)
        assert torch.equal(model(*inputs).sample, model(*inputs).sample)

    @pytest.mark.parametrize("variant", [None, "fp16"])
    @pytest.mark.parametrize("safe_serialization", [True, False])
    @torch.no_grad()
    def test_save_load_variant_and_format(self, tmp_path, variant, safe_serialization):
        model = self.get_model()
        inputs = self.get_inputs(model)
        expected = model(*inputs).sample
        model.save_pretrained(tmp_path, variant=variant, safe_serialization=safe_serialization)
        weights = "diffusion_pytorch_model" + (f".{variant}" if variant else "")
        weights += ".safetensors" if safe_serialization else ".bin"
        assert (tmp_path / weights).is_file(), sorted(path.name for path in tmp_path.iterdir())
        reloaded = self.model_class.from_pretrained(tmp_path, variant=variant).eval()
        assert torch.equal(reloaded(*inputs).sample, expected)
        if variant is not None:
            with pytest.raises(OSError, match="diffusion_pytorch_model"):
                self.model_class.from_pretrained(tmp_path)  # only variant weights there

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    @pytest.mark.parametrize("low_cpu_mem_usage", [True, False])
    def test_from_save_pretrained_dtype(self, tmp_path, dtype, low_cpu_mem_usage):
        model = self.get_model().to(dtype)
        assert model.dtype == dtype
        model.save_pretrained(tmp_path)
        reloaded = self.model_class.from_pretrained(tmp_path, dtype=dtype, low_cpu_mem_usage=low_cpu_mem_usage)
        assert reloaded.dtype == dtype
        state = model.state_dict()
        for key, value in reloaded.state_dict().items():
            assert value.dtype == state[key].dtype and torch.equal(value, state[key]), key

    @torch.no_grad()
    def test_sharded_checkpoint(self, tmp_path):
        model = self.get_model()
        inputs = self.get_inputs(model)
        expected = model(*inputs).sample
        size = sum(tensor.numel() * tensor.element_size() for tensor in model.state_dict().values())
        model.save_pretrained(tmp_path, max_shard_size=size // 3 + 1)
        assert (tmp_path / "diffusion_pytorch_model.safetensors.index.json").is_file()
        assert len(list(tmp_path.glob("diffusion_pytorch_model-*-of-*.safetensors"))) >= 2
        assert torch.equal(self.model_class.from_pretrained(tmp_path).eval()(*inputs).sample, expected)

    @torch.no_grad()
    def test_generic_auto_model(self, tmp_path):
        """``diffusers.AutoModel`` (what loads any saved diffusers model) finds the class, with hf_vtok imported."""
        model = self.get_model()
        inputs = self.get_inputs(model)
        model.save_pretrained(tmp_path)
        loaded = DiffusersAutoModel.from_pretrained(str(tmp_path)).eval()  # diffusers 0.42 joins it as a str
        assert type(loaded) is self.model_class
        assert torch.equal(loaded(*inputs).sample, model(*inputs).sample)

    def test_enable_disable_gradient_checkpointing(self):
        model = self.get_model()
        assert not model.is_gradient_checkpointing
        model.enable_gradient_checkpointing()
        assert model.is_gradient_checkpointing
        model.disable_gradient_checkpointing()
        assert not model.is_gradient_checkpointing

    @pytest.mark.parametrize("storage_dtype", [torch.float16, torch.float8_e4m3fn])
    @torch.no_grad()
    def test_layerwise_casting_inference(self, storage_dtype):
        """Weights stored in ``storage_dtype`` and cast to float32 per layer (``enable_layerwise_casting``)."""
        model = self.get_model()
        inputs = self.get_inputs(model)
        reference = model(*inputs).sample
        model.enable_layerwise_casting(storage_dtype=storage_dtype, compute_dtype=torch.float32)
        skipped = (*DEFAULT_SKIP_MODULES_PATTERN, *model._skip_layerwise_casting_patterns)
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear):
                kept = any(re.search(pattern, name) for pattern in skipped)
                assert module.weight.dtype == (torch.float32 if kept else storage_dtype), name
        output = model(*inputs).sample
        assert output.dtype == torch.float32 and torch.isfinite(output).all()
        error = relative_error(output, reference)
        assert error < self.layerwise_casting_tolerance[storage_dtype], f"relative error {error:.3g}"

    # ----------------------------------------------------------------------------------------------
    # diffusers LoraTesterMixin (stock recipes name ``to_q`` / ``to_k`` / ``to_v`` / ``to_out.0``; hf_vtok's
    # attention is fused, and the model's ``lora_target_modules`` is the list that fits it)
    def _lora_config(self, **changes):
        peft = pytest.importorskip("peft")
        options = dict(r=2, lora_alpha=2, target_modules=list(self.model_class.lora_target_modules))
        return peft.LoraConfig(**{**options, "init_lora_weights": False, **changes})

    def _with_lora(self, **changes):
        """``(model, inputs, output without LoRA, output with it)``."""
        model = self.get_model()
        inputs = self.get_inputs(model)
        with torch.no_grad():
            base = model(*inputs).sample
            model.add_adapter(self._lora_config(**changes))
            adapted = model(*inputs).sample
        assert not torch.allclose(adapted, base)
        return model, inputs, base, adapted

    def test_lora_default_target_modules(self):
        from peft.tuners.lora import LoraLayer

        model = self.get_model()
        targets = model.lora_target_modules
        expected = {
            name
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and name.rpartition(".")[2] in targets
        }
        assert {name.rpartition(".")[2] for name in expected} == set(targets)  # every target names a layer
        model.add_adapter(self._lora_config())
        wrapped = {name for name, module in model.named_modules() if isinstance(module, LoraLayer)}
        assert wrapped == expected
        stock = self._lora_config(target_modules=["to_q", "to_k", "to_v", "to_out.0"])
        with pytest.raises(ValueError, match="not found in the base model"):
            self.get_model().add_adapter(stock)

    @torch.no_grad()
    def test_lora_save_unload_load(self, tmp_path):
        model, inputs, base, adapted = self._with_lora()
        model.save_lora_adapter(tmp_path)
        model.unload_lora()
        assert torch.equal(model(*inputs).sample, base)
        model.load_lora_adapter(tmp_path, prefix=None, use_safetensors=True)
        torch.testing.assert_close(model(*inputs).sample, adapted)
        fresh = self.get_model()
        fresh.load_lora_adapter(tmp_path, weight_name="pytorch_lora_weights.safetensors", prefix=None)
        torch.testing.assert_close(fresh(*inputs).sample, adapted)

    @torch.no_grad()
    def test_lora_fuse_unfuse(self):
        model, inputs, base, adapted = self._with_lora()
        model.fuse_lora()
        torch.testing.assert_close(model(*inputs).sample, adapted, atol=1e-5, rtol=1e-5)
        model.unfuse_lora()
        torch.testing.assert_close(model(*inputs).sample, adapted, atol=1e-5, rtol=1e-5)
        model.unload_lora()
        torch.testing.assert_close(model(*inputs).sample, base, atol=1e-5, rtol=1e-5)

    @torch.no_grad()
    def test_lora_disable_enable_and_scale(self):
        model, inputs, base, adapted = self._with_lora()
        model.disable_lora()
        assert torch.equal(model(*inputs).sample, base)
        model.enable_lora()
        assert torch.equal(model(*inputs).sample, adapted)
        model.set_adapters(["default"], weights=[0.0])
        torch.testing.assert_close(model(*inputs).sample, base)

    def test_lora_wrong_adapter_name_raises_error(self, tmp_path):
        model, *_ = self._with_lora()
        with pytest.raises(ValueError, match="foo"):
            model.save_lora_adapter(tmp_path, adapter_name="foo")

    def test_lora_adapter_metadata_is_loaded(self, tmp_path):
        model, *_ = self._with_lora(r=2, lora_alpha=4)
        model.save_lora_adapter(tmp_path)
        fresh = self.get_model()
        fresh.load_lora_adapter(tmp_path, prefix=None, use_safetensors=True)
        saved, (loaded,) = model.peft_config["default"], fresh.peft_config.values()
        assert (loaded.r, loaded.lora_alpha) == (2, 4)
        assert set(loaded.target_modules) == set(saved.target_modules)


class PipelineTesterMixin:
    """``output_type`` "pt" / "np" / "pil" / "latent", same seed -> same images, ``return_dict=False``, save / load
    and bfloat16 of one tiny pipeline. ``pt`` is a ``[B, 3, H, W]`` tensor and ``np`` a ``[B, H, W, 3]`` array in
    [0, 1], as in diffusers."""

    pipeline_class: type
    components = ("vae", "transformer", "scheduler")  # what model_index.json must name
    bf16_tolerance = 0.05  # max |bf16 - fp32| of the images, which lie in [0, 1]
    # keyword arguments with defaults that every call takes (diffusers' ``required_optional_params``)
    required_optional_params = ("generator", "output_type", "return_dict")
    has_progress_bar = True  # a denoising loop of the pipeline's own (V2Flow's loops run inside its models)

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

    # ----------------------------------------------------------------------------------------------
    # diffusers PipelineTesterMixin
    def test_pipeline_call_signature(self):
        parameters = inspect.signature(self.pipeline_class.__call__).parameters
        optional = {name for name, parameter in parameters.items() if parameter.default is not inspect.Parameter.empty}
        assert set(self.required_optional_params) <= optional, set(self.required_optional_params) - optional
        assert "num_images_per_prompt" not in parameters  # no prompt: repeat a label / prompt for more images

    @torch.no_grad()
    def test_components_function(self):
        pipe = self.get_pipeline()
        expected = set(inspect.signature(self.pipeline_class.__init__).parameters) - {"self"}
        assert set(pipe.components) == expected
        rebuilt = self.pipeline_class(**pipe.components)
        rebuilt.set_progress_bar_config(disable=True)
        assert torch.equal(self._images(rebuilt, output_type="latent"), self._images(pipe, output_type="latent"))

    def test_model_cpu_offload_seq_names_every_model(self):
        pipe = self.get_pipeline()
        models = {name for name, component in pipe.components.items() if isinstance(component, torch.nn.Module)}
        assert set(pipe.model_cpu_offload_seq.split("->")) == models

    @torch.no_grad()
    def test_generic_loader(self, tmp_path):
        """``DiffusionPipeline.from_pretrained`` (what the Hub and diffusers' own code call) loads the folder, with
        hf_vtok imported."""
        pipe = self.get_pipeline()
        expected = self._images(pipe, output_type="latent")
        pipe.save_pretrained(tmp_path)
        loaded = DiffusionPipeline.from_pretrained(tmp_path)
        loaded.set_progress_bar_config(disable=True)
        assert type(loaded) is self.pipeline_class
        for name in self.components:
            assert type(getattr(loaded, name)) is type(getattr(pipe, name)), name
        assert torch.equal(self._images(loaded, output_type="latent"), expected)

    def test_serialization_with_variants(self, tmp_path):
        pipe = self.get_pipeline()
        pipe.save_pretrained(tmp_path, variant="fp16", safe_serialization=False)
        for name, component in pipe.components.items():
            if not isinstance(component, torch.nn.Module):
                continue
            files = os.listdir(tmp_path / name)
            assert any(file.split(".")[1].startswith("fp16") for file in files), (name, files)
            if isinstance(component, ModelMixin):
                assert "diffusion_pytorch_model.fp16.bin" in files, (name, files)

    @torch.no_grad()
    def test_loading_with_variants(self, tmp_path):
        pipe = self.get_pipeline()
        expected = self._images(pipe, output_type="latent")
        pipe.save_pretrained(tmp_path, variant="fp16", safe_serialization=False)
        loaded = self.pipeline_class.from_pretrained(tmp_path, variant="fp16")
        loaded.set_progress_bar_config(disable=True)
        for name, component in pipe.components.items():
            if isinstance(component, torch.nn.Module):
                reloaded = getattr(loaded, name).state_dict()
                for key, value in component.state_dict().items():
                    assert torch.equal(reloaded[key], value), f"{name}.{key}"
        assert torch.equal(self._images(loaded, output_type="latent"), expected)

    def test_loading_with_incorrect_variants_raises_error(self, tmp_path):
        self.get_pipeline().save_pretrained(tmp_path)
        with pytest.raises(ValueError, match="variant=fp16"):
            self.pipeline_class.from_pretrained(tmp_path, variant="fp16")

    def test_to_dtype(self):
        pipe = self.get_pipeline()
        models = [component for component in pipe.components.values() if isinstance(component, torch.nn.Module)]
        assert all(model.dtype == torch.float32 for model in models)
        pipe.to(dtype=torch.bfloat16)
        assert all(model.dtype == torch.bfloat16 for model in models) and pipe.dtype == torch.bfloat16

    def test_to_device(self):
        pipe = self.get_pipeline().to("cpu")
        assert pipe.device.type == "cpu"
        for name, component in pipe.components.items():
            if isinstance(component, torch.nn.Module):
                assert all(parameter.device.type == "cpu" for parameter in component.parameters()), name

    @torch.no_grad()
    def test_save_load_bfloat16(self, tmp_path):
        pipe = self.get_pipeline().to(torch.bfloat16)
        expected = self._images(pipe, output_type="latent")
        pipe.save_pretrained(tmp_path)
        loaded = self.pipeline_class.from_pretrained(tmp_path, dtype=torch.bfloat16)
        loaded.set_progress_bar_config(disable=True)
        for name, component in loaded.components.items():
            if isinstance(component, torch.nn.Module):
                assert component.dtype == torch.bfloat16, name
        assert torch.equal(self._images(loaded, output_type="latent"), expected)

    @torch.no_grad()
    def test_progress_bar(self):
        if not self.has_progress_bar:
            pytest.skip(f"{self.pipeline_class.__name__} has no denoising loop of its own")
        pipe = self.get_pipeline()
        pipe.set_progress_bar_config(disable=False)
        with io.StringIO() as stderr, contextlib.redirect_stderr(stderr):
            self._images(pipe, output_type="latent")
            shown = stderr.getvalue()
        steps = re.search(r"/(\d+) ", shown)
        assert steps and f"{steps.group(1)}/{steps.group(1)}" in shown, shown
        pipe.set_progress_bar_config(disable=True)
        with io.StringIO() as stderr, contextlib.redirect_stderr(stderr):
            self._images(pipe, output_type="latent")
            assert stderr.getvalue() == ""


class ClassConditionalPipelineTesterMixin(PipelineTesterMixin):
    """A class-conditional pipeline (``class_labels`` first) refuses labels out of range before any compute, takes
    the nested labels diffusers' batching makes, per-sample generators and a step-end callback."""

    required_optional_params = (
        *PipelineTesterMixin.required_optional_params,
        "num_inference_steps",
        "guidance_scale",
        "latents",
        "callback_on_step_end",
        "callback_on_step_end_tensor_inputs",
    )

    def get_call_kwargs(self):
        return dict(class_labels=[1, 4], num_inference_steps=3, guidance_scale=2.0)

    @torch.no_grad()
    def test_nested_class_labels(self):
        """``[[1], [4]]`` (what diffusers' batching helpers and ``DiTPipeline`` take) and ``[B, 1]`` tensors."""
        pipe = self.get_pipeline()
        expected = self._images(pipe, output_type="latent")
        for labels in ([[1], [4]], torch.tensor([[1], [4]])):
            kwargs = {**self.get_call_kwargs(), "class_labels": labels}
            assert torch.equal(pipe(**kwargs, generator=seeded(0), output_type="latent").images, expected)
        with pytest.raises(ValueError, match=r"class_labels must be .*\[\[1, 4\]\]"):
            pipe(**{**self.get_call_kwargs(), "class_labels": [[1, 4]]}, output_type="latent")

    @torch.no_grad()
    def test_inference_batch_single_identical(self):
        """Sample 0 of a batch with per-sample generators is the image of a batch of one (diffusers' check)."""
        pipe = self.get_pipeline()
        kwargs = {**self.get_call_kwargs(), "class_labels": [1]}
        single = pipe(**kwargs, generator=seeded(0), output_type="latent").images
        batched = {**kwargs, "class_labels": 3 * [[1]]}
        batch = pipe(**batched, generator=[seeded(index) for index in range(3)], output_type="latent").images
        assert batch.shape[0] == 3 and not torch.equal(batch[1], batch[2])
        assert relative_error(batch[:1], single) < 1e-5  # float rounding of batched matmuls only
        with pytest.raises(ValueError, match="2 generators for a batch of 3"):
            pipe(**batched, generator=[seeded(0), seeded(1)], output_type="latent")

    @torch.no_grad()
    def test_guidance_on_and_off(self):
        pipe = self.get_pipeline()
        guided = self._images(pipe, output_type="latent")
        plain = pipe(**{**self.get_call_kwargs(), "guidance_scale": 1.0}, generator=seeded(0), output_type="latent")
        assert plain.images.shape == guided.shape and not torch.equal(plain.images, guided)

    @torch.no_grad()
    def test_callback_on_step_end(self):
        """The callback sees each step's latents and may replace them (diffusers' ``callback_on_step_end``)."""
        pipe = self.get_pipeline()
        assert pipe._callback_tensor_inputs == ["latents"]
        seen = []

        def callback(pipeline, step, timestep, tensors):
            assert pipeline is pipe and set(tensors) == {"latents"}
            seen.append(step)
            latents = tensors["latents"]
            assert latents.shape == self.expected_latents_shape()
            return {"latents": torch.zeros_like(latents)} if step == steps - 1 else {}

        steps = self.get_call_kwargs()["num_inference_steps"]
        output = self._images(pipe, output_type="latent", callback_on_step_end=callback)
        assert seen == list(range(steps)) and torch.equal(output, torch.zeros_like(output))
        with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs .*'noise'"):
            self._images(pipe, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["noise"])

    @pytest.mark.parametrize("label", ["too_large", "negative"])
    def test_class_labels_out_of_range_fail_before_any_compute(self, label, monkeypatch):
        pipe = self.get_pipeline()
        monkeypatch.setattr(pipe.transformer, "forward", lambda *a, **k: pytest.fail("the transformer ran"))
        bad = pipe.transformer.config.num_classes if label == "too_large" else -1  # the null class is no label
        kwargs = {**self.get_call_kwargs(), "class_labels": [1, bad]}
        with pytest.raises(ValueError, match=rf"class_labels \[{bad}\] are out of range"):
            pipe(**kwargs, output_type="latent")
