"""Every hf_vtok family and every released original checkpoint, as data (this module imports no hf_vtok code).

A family is one ``FamilySpec``: where its classes live (as ``"module:Name"`` strings), its converter, its
pipeline, and what its model cards say (template, title, license, tags). ``import hf_vtok`` registers the
tokenizer families with the transformers Auto classes from here; ``hf-vtok convert`` builds its sub-commands,
``hf_vtok.hub`` its cards and presets, and ``benchmarks/run_all.py`` its family list from here too.

    from hf_vtok.registry import FAMILIES, PRETRAINED, family_presets
    FAMILIES["vitok"].model                    # "hf_vtok.models.vitok:ViTokModel"
    PRETRAINED["softvq-l-64"].repo_id          # "SoftVQVAE/softvq-l-64"

Adding a family: its folder under ``models/`` (and ``pipelines/``), one ``FamilySpec`` below, a card
template in ``model_cards/``; its released checkpoints are ``PretrainedCheckpoint`` entries below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

TOKENIZER, GENERATOR, PIPELINE = "tokenizer", "generator", "pipeline"
KINDS = (TOKENIZER, GENERATOR, PIPELINE)

_TOKENIZER_TAGS = ("image-tokenizer", "autoencoder")
_GENERATOR_TAGS = ("class-conditional-image-generation", "imagenet")


@dataclass(frozen=True)
class FamilySpec:
    """One family of hf_vtok.

    Class references are ``"module:Name"`` strings (``hf_vtok.utils.imports.import_object`` resolves them).
    ``converter`` is the module of the family's ``CONVERTER`` (``hf_vtok.conversion.Converter``);
    ``pipeline`` the class that composes the family's model into images; ``sampling_call`` the arguments
    of the released sampling call, for the card's usage snippet; ``benchmark`` the group of
    ``benchmarks/run_all.py`` that times it.
    """

    name: str
    kind: str
    title: str
    license: str
    original_code: str
    card_template: str
    tags: tuple[str, ...] = ()
    config: str | None = None
    model: str | None = None
    processor: str | None = None
    converter: str | None = None
    pipeline: str | None = None
    pipeline_tag: str | None = None  # None: the tokenizer / generation tag of the card's kind
    sampling_call: str | None = None
    benchmark: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"family {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == TOKENIZER and not (self.config and self.model and self.processor):
            raise ValueError(f"tokenizer family {self.name!r} needs config, model and processor classes")

    @property
    def command(self) -> str:
        """The family's name in ``hf-vtok convert FAMILY``."""
        return self.name.replace("_", "-")

    def class_names(self) -> tuple[str, ...]:
        """Names of the classes the family defines (config, model, processor, pipeline)."""
        return tuple(ref.rpartition(":")[2] for ref in (self.config, self.model, self.pipeline) if ref)


_VITOK_CODE = "https://github.com/Na-VAE/vitok-release"
_CONTINUOUS_CODE = "https://github.com/Hhhhhhao/continuous_tokenizer"
_V2FLOW_CODE = "https://github.com/zhangguiwei610/V2Flow"
# licenses: vitok-release's README says "License: MIT" (its pyproject classifier says Apache-2.0);
# continuous_tokenizer's PyTorchModelHubMixin pushes carry apache-2.0; kylesargent/FlowMo's LICENSE is Apache-2.0;
# V2Flow's repository is MIT.


def _tokenizer(name: str, title: str, license: str, code: str, tags: tuple, classes: tuple, **extra) -> FamilySpec:
    """A tokenizer family of ``hf_vtok.models.<name>``: ``classes`` = its config, model and processor class names
    (a processor of another package as ``"module:Name"``); its converter is ``convert_<name>_original_to_hf``."""
    package = f"hf_vtok.models.{name}"
    config, model, processor = (ref if ":" in ref else f"{package}:{ref}" for ref in classes)
    return FamilySpec(
        name,
        TOKENIZER,
        title,
        license,
        code,
        f"{name}.md",
        _TOKENIZER_TAGS + tags,
        config=config,
        model=model,
        processor=processor,
        converter=f"{package}.convert_{name}_original_to_hf",
        **extra,
    )


def _generator(name: str, title: str, license: str, code: str, package: str, model: str, pipeline: str, **extra):
    """A generator family: its transformer ``model`` in ``hf_vtok.models.<package>`` (converter
    ``convert_<package>_original_to_hf`` there) and its ``pipeline`` in ``hf_vtok.pipelines.<package>``."""
    return FamilySpec(
        name,
        GENERATOR,
        title,
        license,
        code,
        f"{name}.md",
        _GENERATOR_TAGS + (extra.pop("tag", name),),
        model=f"hf_vtok.models.{package}:{model}",
        converter=f"hf_vtok.models.{package}.convert_{package}_original_to_hf",
        pipeline=f"hf_vtok.pipelines.{package}:{pipeline}",
        **extra,
    )


_LATENT_TOKEN_PROCESSOR = "hf_vtok.models.latent_token_vit:LatentTokenImageProcessor"
_FAMILY_LIST = [
    _tokenizer(
        "vitok", "ViTok-v2", "mit", _VITOK_CODE, ("vitok",), ("ViTokConfig", "ViTokModel", "ViTokImageProcessor"),
        benchmark="vitok",
    ),
    _tokenizer(
        "softvq", "SoftVQ-VAE", "apache-2.0", _CONTINUOUS_CODE, ("softvq-vae", "1d-tokenizer"),
        ("SoftVQConfig", "SoftVQModel", _LATENT_TOKEN_PROCESSOR), benchmark="continuous",
    ),
    _tokenizer(
        "maetok", "MAETok", "apache-2.0", _CONTINUOUS_CODE, ("maetok", "1d-tokenizer"),
        ("MAETokConfig", "MAETokModel", _LATENT_TOKEN_PROCESSOR), benchmark="continuous",
    ),
    _tokenizer(
        "v2flow", "V²Flow", "mit", _V2FLOW_CODE, ("v2flow",), ("V2FlowConfig", "V2FlowModel", "V2FlowImageProcessor"),
        pipeline="hf_vtok.pipelines.v2flow:V2FlowPipeline", benchmark="v2flow",
    ),
    _tokenizer(
        "flowmo", "FlowMo", "apache-2.0", "https://github.com/kylesargent/FlowMo", ("flowmo",),
        ("FlowMoConfig", "FlowMoModel", "FlowMoImageProcessor"), benchmark="flowmo",
    ),
    _generator(
        "sit", "SiT", "apache-2.0", _CONTINUOUS_CODE, "sit", "SiTTransformer1DModel", "SiTPipeline",
        sampling_call="num_inference_steps=250, guidance_scale=1.75, guidance_interval=(0.0, 0.7)", benchmark="sit",
    ),
    _generator(
        "dit", "DiT", "apache-2.0", _CONTINUOUS_CODE, "dit_1d", "DiTTransformer1DModel", "DiT1DPipeline",
        sampling_call="num_inference_steps=250, guidance_scale=1.75", benchmark="sit",
    ),
    _generator(
        "vitok_dit", "ViTok-v2 DiT", "mit", _VITOK_CODE, "vitok_dit", "ViTokDiTTransformerModel", "ViTokDiTPipeline",
        sampling_call="num_inference_steps=50, guidance_scale=4.0", tag="vitok",
    ),
    FamilySpec(
        "v2flow_llama",
        PIPELINE,
        "V²Flow + LLaMA",
        "mit",
        _V2FLOW_CODE,
        "v2flow_llama.md",
        ("text-to-image", "autoregressive", "v2flow", "llama"),
        pipeline="hf_vtok.pipelines.v2flow:V2FlowLlamaPipeline",
        pipeline_tag="text-to-image",
    ),
]  # fmt: skip
FAMILIES: dict[str, FamilySpec] = {spec.name: spec for spec in _FAMILY_LIST}


def get_family(name: str) -> FamilySpec:
    """The ``FamilySpec`` of a family name (``"vitok-dit"`` spellings accepted); a ``ValueError`` lists the names."""
    spec = FAMILIES.get(name) or FAMILIES.get(name.replace("-", "_"))
    if spec is None:
        raise ValueError(f"unknown hf_vtok family {name!r}; known: {sorted(FAMILIES)}")
    return spec


def families(kind: str | None = None) -> list[FamilySpec]:
    """The families, in registry order (only those of ``kind`` when given)."""
    return [spec for spec in FAMILIES.values() if kind is None or spec.kind == kind]


def family_of_class(cls: type) -> FamilySpec | None:
    """The family defining ``cls`` or its nearest registered base class (by class name), or None."""
    by_class = {name: spec for spec in FAMILIES.values() for name in spec.class_names()}
    for klass in cls.__mro__:
        if klass.__name__ in by_class:
            return by_class[klass.__name__]
    return None


# --------------------------------------------------------------------------------------------------
# released original checkpoints

_CHECKPOINT_FILES = {"checkpoint": "model.safetensors", "config": "config.json"}  # PyTorchModelHubMixin layout


@dataclass(frozen=True)
class PretrainedCheckpoint:
    """One released original checkpoint and what hf_vtok's conversion of it must give.

    ``files`` maps the roles the family's converter takes to file names in ``repo_id``; ``revision`` is a
    commit to pin (None: the default branch); ``config`` holds fields the converted config must have;
    generators name the ``tokenizer`` entry they were trained on and their released ``sampling`` recipe;
    ``converter_options`` are keyword arguments of the family converter's ``convert_release`` this release
    needs (e.g. ``arch_overrides`` of a SoftVQ / MAETok config naming a non-standard ViT).
    """

    name: str
    family: str
    kind: str
    repo_id: str
    files: Mapping[str, str]
    config: Mapping[str, object]
    revision: str | None = None
    aliases: tuple[str, ...] = ()
    tokenizer: str | None = None
    sampling: Mapping[str, object] = field(default_factory=dict)
    converter_options: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("files", "config", "sampling", "converter_options"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    @property
    def license(self) -> str:
        """The license the original release is published under (its family's)."""
        return FAMILIES[self.family].license

    @property
    def short_name(self) -> str:
        """The name the family's own command uses (``hf-vtok convert vitok --preset 350M-f16x64``)."""
        return self.aliases[0] if self.aliases else self.name

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}"

    def mismatches(self, config) -> list[str]:
        """Fields of ``config`` (an hf_vtok / diffusers config) that differ from this release's."""
        wrong = []
        for key, expected in self.config.items():
            actual = getattr(config, key, None)
            if isinstance(actual, list):
                actual = tuple(actual)
            if actual != expected:
                wrong.append(f"{key} {actual!r} (the release has {expected!r})")
        return wrong


def _vitok(short: str, variant: str) -> PretrainedCheckpoint:
    return PretrainedCheckpoint(
        name=f"vitok-v2-{short}",
        aliases=(short,),
        family="vitok",
        kind=TOKENIZER,
        repo_id=f"philippehansen/ViTok-v2-{short}",
        files={"encoder": "encoder.safetensors", "decoder": "decoder.safetensors"},
        config={"variant": variant},
    )


def _flowmo(name: str, filename: str, context_dim: int, bits_per_token: int) -> PretrainedCheckpoint:
    return PretrainedCheckpoint(
        name=name,
        family="flowmo",
        kind=TOKENIZER,
        repo_id="ksarge/FlowMo",
        files={"checkpoint": filename},
        config={"context_dim": context_dim, "bits_per_token": bits_per_token},
    )


def _latent_tokens(family: str, org: str, name: str, tokens: int, channels: int, size: int) -> PretrainedCheckpoint:
    return PretrainedCheckpoint(
        name=name,
        family=family,
        kind=TOKENIZER,
        repo_id=f"{org}/{name}",
        files=_CHECKPOINT_FILES,
        config={"num_latent_tokens": tokens, "latent_channels": channels, "image_size": size},
    )


# README "SiT Generation": SDE sampler, cosine path, 250 steps, CFG 1.75 on t <= 0.7
SIT_RECIPE = {
    "sampler": "sde",
    "path_type": "cosine",
    "num_inference_steps": 250,
    "guidance_scale": 1.75,
    "guidance_interval": (0.0, 0.7),
}
# README "DiT Generation": cosine schedule, 250 ancestral steps, CFG 1.75 (clip_denoised False)
DIT_RECIPE = {"num_inference_steps": 250, "guidance_scale": 1.75}
_XL = {"hidden_size": 1152, "num_layers": 28, "num_attention_heads": 16}


def _generator(family: str, org: str, tokenizer: PretrainedCheckpoint) -> PretrainedCheckpoint:
    return PretrainedCheckpoint(
        name=f"{family}-xl_{tokenizer.name}",
        family=family,
        kind=GENERATOR,
        repo_id=f"{org}/{family}-xl_{tokenizer.name}",
        files=_CHECKPOINT_FILES,
        config={
            **_XL,
            "num_tokens": tokenizer.config["num_latent_tokens"],
            "in_channels": tokenizer.config["latent_channels"],
        },
        tokenizer=tokenizer.name,
        sampling=SIT_RECIPE if family == "sit" else DIT_RECIPE,
    )


_SOFTVQ = [
    _latent_tokens("softvq", "SoftVQVAE", name, tokens, channels, size)
    for name, tokens, channels, size in (
        ("softvq-l-64", 64, 32, 256),
        ("softvq-bl-64", 64, 32, 256),
        ("softvq-b-64", 64, 32, 256),
        ("softvq-l-32", 32, 64, 256),
        ("softvq-bl-32", 32, 64, 256),
        ("softvq-b-32", 32, 64, 256),
        ("softvq-bl-64-512", 64, 32, 512),
        ("softvq-l-32-512", 32, 64, 512),
    )
]
_MAETOK = [
    _latent_tokens("maetok", "MAETok", "maetok-b-128", 128, 32, 256),
    _latent_tokens("maetok", "MAETok", "maetok-b-128-512", 128, 32, 512),
]
_BY_NAME = {entry.name: entry for entry in _SOFTVQ + _MAETOK}

PRETRAINED: dict[str, PretrainedCheckpoint] = {
    entry.name: entry
    for entry in [
        _vitok("350M-f16x16", "Ld4-Ld24/1x16x16"),
        _vitok("350M-f16x32", "Ld4-Ld24/1x16x32"),
        _vitok("350M-f16x64", "Ld4-Ld24/1x16x64"),
        _vitok("5B-f16x16", "Td4-T/1x16x16"),
        _vitok("5B-f16x32", "Td4-T/1x16x32"),
        _vitok("5B-f16x64", "Td4-T/1x16x64"),
        _vitok("5B-f32x64", "Td4-T/1x32x64"),
        _vitok("5B-f32x128", "Td4-T/1x32x128"),
        _vitok("5B-f32x256", "Td4-T/1x32x256"),
        _flowmo("flowmo-lo", "flowmo_lo.pth", 18, 9),
        _flowmo("flowmo-hi", "flowmo_hi.pth", 56, 14),
        *_SOFTVQ,
        *_MAETOK,
        *(
            _generator("sit", "MAETok" if name.startswith("maetok") else "SoftVQVAE", _BY_NAME[name])
            for name in (
                "maetok-b-128",
                "maetok-b-128-512",
                "softvq-l-64",
                "softvq-bl-64",
                "softvq-b-64",
                "softvq-l-32",
                "softvq-bl-32",
                "softvq-b-32",
                "softvq-bl-64-512",
                "softvq-l-32-512",
            )
        ),
        _generator("dit", "SoftVQVAE", _BY_NAME["softvq-l-64"]),
        _generator("dit", "SoftVQVAE", _BY_NAME["softvq-l-32"]),
    ]
}
_ALIASES = {alias: entry.name for entry in PRETRAINED.values() for alias in entry.aliases}


def get_pretrained(name: str | PretrainedCheckpoint) -> PretrainedCheckpoint:
    """The registry entry of a preset name (or alias); a ``ValueError`` lists the known names."""
    if isinstance(name, PretrainedCheckpoint):
        return name
    entry = PRETRAINED.get(name) or PRETRAINED.get(_ALIASES.get(name, ""))
    if entry is None:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRETRAINED)}")
    return entry


def family_presets(family: str) -> dict[str, PretrainedCheckpoint]:
    """The entries of one family under the names its own ``hf-vtok convert FAMILY --preset`` takes."""
    return {entry.short_name: entry for entry in PRETRAINED.values() if entry.family == family}


def format_registry() -> str:
    """A text table of every entry (``hf-vtok convert --list``)."""
    rows = [("preset", "family", "original repository", "files", "license")]
    for entry in PRETRAINED.values():
        rows.append((entry.name, entry.family, entry.repo_id, ", ".join(entry.files.values()), entry.license))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


__all__ = [
    "DIT_RECIPE",
    "FAMILIES",
    "PRETRAINED",
    "SIT_RECIPE",
    "FamilySpec",
    "PretrainedCheckpoint",
    "families",
    "family_of_class",
    "family_presets",
    "format_registry",
    "get_family",
    "get_pretrained",
]
