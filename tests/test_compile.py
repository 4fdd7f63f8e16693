"""torch.compile(fullgraph=True) readiness: every family's encode / decode and sampler-step entry point
traces into one graph (no graph break) on a tiny config.

``torch._dynamo.explain`` traces without generating code, so this stays cheap; the compiled numerics of
every tokenizer's encode are checked by its TokenizerTesterMixin class.
"""

import pytest
import torch
import torch._dynamo

from hf_vtok import (
    DiTTransformer1DModel,
    MAETokConfig,
    MAETokModel,
    SiTTransformer1DModel,
    SoftVQConfig,
    SoftVQModel,
    ViTokConfig,
    ViTokDiTTransformerModel,
    ViTokModel,
)
from tests.testing_utils.tiny_models import (
    TINY_1D,
    TINY_LATENT_TOKEN_VIT,
    TINY_SOFTVQ_EXTRA,
    TINY_VITOK_DIT,
    TINY_VITOK_VARIANT,
    tiny_flowmo_model,
    tiny_v2flow_model,
)

pytestmark = pytest.mark.slow


def _graph_breaks(function, *args, **kwargs):
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(function)(*args, **kwargs)
    return explanation.graph_count, [str(reason.reason).splitlines()[0] for reason in explanation.break_reasons]


def _vitok():
    model = ViTokModel(ViTokConfig.from_variant(TINY_VITOK_VARIANT)).eval()
    images = torch.rand(2, 3, 16, 24) * 2 - 1
    latents = model.encode(images).latents
    return [("encode", model.encode, (images,), {}), ("decode", model.decode, (latents,), {})]


def _flowmo():
    model = tiny_flowmo_model()
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    latents = model.encode(images).latents
    code_states = model.decoder.code_embed(model.conditioning(latents))
    rotary = model._rotary(model.decoder, 16, 16, images.device)
    image_states = model.decoder.image_embed(torch.randn(2, 16, model.config.pixels_per_token))
    conditioning = model.decoder.embed_time(torch.full((2,), 0.5))
    return [
        ("encode", model.encode, (images,), {}),
        ("velocity", model.velocity, (images, 0.5), {"latents": latents}),
        # the sampler step of decode: the decoder stack (what `model.decoder.compile()` compiles)
        ("decoder step", model.decoder, (image_states, code_states, rotary, conditioning), {"return_code": False}),
    ]


def _latent_token(model_class, config_class, **extra):
    model = model_class(config_class(**TINY_LATENT_TOKEN_VIT, **extra)).eval()
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    latents = model.encode(images).latents
    return [("encode", model.encode, (images,), {}), ("decode", model.decode, (latents,), {})]


def _generators():
    entries = []
    for model_class in (SiTTransformer1DModel, DiTTransformer1DModel):
        model = model_class(**TINY_1D).eval()
        latents = torch.randn(2, TINY_1D["num_tokens"], TINY_1D["in_channels"])
        entries.append((model_class.__name__, model, (latents, torch.tensor([0.5, 0.5]), torch.tensor([1, 5])), {}))
    vitok_dit = ViTokDiTTransformerModel(**TINY_VITOK_DIT, class_token=True, num_register_tokens=2).eval()
    latents = torch.randn(2, TINY_VITOK_DIT["num_tokens"], TINY_VITOK_DIT["in_channels"])
    entries.append(
        ("ViTokDiTTransformerModel", vitok_dit, (latents, torch.tensor([0.5, 0.5]), torch.tensor([1, 5])), {})
    )
    return entries


def _v2flow():
    model = tiny_v2flow_model()
    latents = torch.randn(2, 4, 4, 4)
    gumbel = -torch.empty(2, 16, model.config.llm_vocab_size).exponential_().log()
    condition = torch.randn(6, model.config.hidden_size)
    return [
        ("encode", model.encode, (latents,), {"gumbel_noise": gumbel}),
        # the sampler step of decode: one flow-head evaluation (what `model.flow_head.compile()` compiles)
        (
            "flow head step",
            model.flow_head,
            (torch.randn(6, model.config.token_dim), torch.full((6,), 500.0), condition),
            {},
        ),
    ]


FAMILIES = {
    "vitok": _vitok,
    "flowmo": _flowmo,
    "softvq": lambda: _latent_token(SoftVQModel, SoftVQConfig, **TINY_SOFTVQ_EXTRA),
    "maetok": lambda: _latent_token(MAETokModel, MAETokConfig),
    "generators": _generators,
    "v2flow": _v2flow,
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@torch.no_grad()
def test_entry_points_trace_without_graph_breaks(family):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        for name, function, args, kwargs in FAMILIES[family]():
            graphs, breaks = _graph_breaks(function, *args, **kwargs)
            assert (graphs, breaks) == (1, []), f"{family} {name}: {graphs} graphs, breaks: {breaks}"
    finally:
        torch.set_num_threads(threads)
        torch._dynamo.reset()
