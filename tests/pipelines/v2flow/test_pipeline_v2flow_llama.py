"""V²Flow + LLaMA on tiny configs: vocabulary extension, logits processors, the generation pipeline, the
token-id cache and the training script (no download: the text tokenizer is built here)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from hf_vtok import V2FlowConfig, V2FlowLlamaPipeline, V2FlowModel, V2FlowPipeline
from hf_vtok.data import cache_latents, load_latent_cache
from hf_vtok.hub.loading import load_autoencoder
from hf_vtok.pipelines.v2flow.language_model import (
    IGNORE_INDEX,
    ClassifierFreeGuidanceLogitsProcessor,
    ImageSpanLogitsProcessor,
    SeededSamplingLogitsProcessor,
    V2FlowVocabulary,
    extend_vocabulary,
    image_sequence,
)
from tests.pipelines.v2flow.test_pipeline_v2flow import V2FlowPipelineTesterMixin
from tests.testing_utils.tiny_models import TINY_V2FLOW, tiny_dcae
from tests.testing_utils.training import REPO_ROOT, free_port, run_script

WORDS = "a photo of cat dog red blue bird big small the car tree sky sun cats".split()
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_text_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer with exactly TINY_V2FLOW's ``llm_vocab_size`` tokens (the V2Flow LLM vocabulary)."""
    vocabulary = {token: index for index, token in enumerate(SPECIALS + WORDS)}
    assert len(vocabulary) == TINY_V2FLOW["llm_vocab_size"]
    backend = Tokenizer(models.WordLevel(vocabulary, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def tiny_llama(tie: bool = False) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=TINY_V2FLOW["llm_vocab_size"],
        hidden_size=TINY_V2FLOW["llm_embed_dim"],
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def tiny_v2flow(language_model=None) -> V2FlowModel:
    """A V2Flow tokenizer whose LLM vocabulary is the tiny LLaMA's input embeddings (as the real recipe)."""
    torch.manual_seed(1)
    model = V2FlowModel(V2FlowConfig(**TINY_V2FLOW)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    if language_model is not None:
        model.load_llm_vocabulary(language_model.get_input_embeddings().weight.detach().clone())
    return model


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def tiny_llama_pipeline() -> V2FlowLlamaPipeline:
    language_model, text_tokenizer = tiny_llama(), tiny_text_tokenizer()
    image_tokenizer = tiny_v2flow(language_model)
    extend_vocabulary(language_model, text_tokenizer, image_tokenizer)
    return V2FlowLlamaPipeline(
        vae=tiny_dcae(), tokenizer=image_tokenizer, language_model=language_model, text_tokenizer=text_tokenizer
    )


@pytest.fixture(scope="module")
def pipeline():
    return tiny_llama_pipeline()


class TestV2FlowLlamaPipeline(V2FlowPipelineTesterMixin):
    """Prompts -> LLaMA-sampled V²Flow ids (classifier-free guided) -> V²Flow + DC-AE decoding."""

    pipeline_class = V2FlowLlamaPipeline
    components = ("vae", "tokenizer", "language_model")

    def get_pipeline(self):
        return tiny_llama_pipeline()

    def get_call_kwargs(self):
        return dict(prompt=["a red cat", "the big blue bird in the sky"], guidance_scale=2.0)


# --------------------------------------------------------------------------------------------------
# vocabulary extension


@pytest.mark.parametrize("tie", [False, True])
def test_extension_keeps_text_rows_and_initialises_from_the_codebook(tmp_path, tie):
    language_model, text_tokenizer = tiny_llama(tie), tiny_text_tokenizer()
    image_tokenizer = tiny_v2flow(language_model)
    text_in = language_model.get_input_embeddings().weight.detach().clone()
    text_out = language_model.get_output_embeddings().weight.detach().clone()
    prompt = "a photo of the red cat"
    text_ids = text_tokenizer(prompt).input_ids
    with torch.no_grad():
        text_logits = language_model(torch.tensor([text_ids])).logits
    vocabulary = extend_vocabulary(language_model, text_tokenizer, image_tokenizer)

    size, vocab = TINY_V2FLOW["codebook_size"], TINY_V2FLOW["llm_vocab_size"]
    assert vocabulary == V2FlowVocabulary(vocab, size, vocab + size, vocab + size + 1)
    assert len(text_tokenizer) == vocab + size + 2 == language_model.config.vocab_size
    assert text_tokenizer(prompt).input_ids == text_ids  # text tokenization unchanged
    assert text_tokenizer.convert_ids_to_tokens(vocab + 3) == "<|v2flow_3|>"
    weight_in = language_model.get_input_embeddings().weight
    weight_out = language_model.get_output_embeddings().weight
    assert torch.equal(weight_in[:vocab], text_in)  # bit-identical text rows
    assert torch.equal(weight_out[:vocab], text_out)
    with torch.no_grad():  # text logits are the same over the text ids
        assert torch.equal(language_model(torch.tensor([text_ids])).logits[..., :vocab], text_logits)
    codebook = image_tokenizer.quantizer.codebook
    image_rows = weight_in[vocabulary.image_token_offset : vocabulary.image_token_offset + size]
    expected = codebook * text_in.norm(dim=-1).mean()
    assert torch.allclose(image_rows, expected, atol=1e-6)
    # same direction as the code: the code's nearest image row is its own
    cosine = torch.nn.functional.normalize(codebook, dim=-1) @ torch.nn.functional.normalize(image_rows, dim=-1).T
    assert torch.equal(cosine.argmax(dim=1), torch.arange(size))
    if not tie:
        output_rows = weight_out[vocabulary.image_token_offset : vocabulary.image_token_offset + size]
        assert torch.allclose(output_rows, codebook * text_out.norm(dim=-1).mean(), atol=1e-6)
    assert torch.isfinite(weight_in).all() and torch.isfinite(weight_out).all()

    language_model.save_pretrained(tmp_path)
    text_tokenizer.save_pretrained(tmp_path)
    reloaded, tokenizer = AutoModelForCausalLM.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path)
    assert V2FlowVocabulary.from_tokenizer(tokenizer, size) == vocabulary
    assert torch.equal(reloaded.get_input_embeddings().weight, weight_in)
    assert torch.equal(reloaded.get_output_embeddings().weight, weight_out)


def test_extension_refusals():
    language_model, text_tokenizer = tiny_llama(), tiny_text_tokenizer()
    image_tokenizer = tiny_v2flow(language_model)
    with pytest.raises(ValueError, match="no LLM vocabulary"):
        extend_vocabulary(
            language_model, text_tokenizer, V2FlowModel(V2FlowConfig(**TINY_V2FLOW, use_llm_vocabulary=False))
        )
    with pytest.raises(ValueError, match="16-d codes"):
        extend_vocabulary(
            language_model, text_tokenizer, V2FlowModel(V2FlowConfig(**{**TINY_V2FLOW, "llm_embed_dim": 16}))
        )
    with pytest.raises(ValueError, match="lacks"):
        V2FlowVocabulary.from_tokenizer(text_tokenizer, 16)
    vocabulary = extend_vocabulary(language_model, text_tokenizer, image_tokenizer)
    with pytest.raises(ValueError, match="extended before"):
        extend_vocabulary(language_model, text_tokenizer, image_tokenizer)
    with pytest.raises(ValueError, match="not V2Flow image tokens"):
        vocabulary.ids_to_image_tokens(torch.tensor([5, vocabulary.image_token_offset]))
    with pytest.raises(ValueError, match="image tokens must be"):
        vocabulary.image_tokens_to_ids(torch.tensor([16]))


def test_training_sequence_labels_only_image_tokens(pipeline):
    vocabulary, codes = pipeline.vocabulary, torch.arange(16).flip(0)
    example = image_sequence(pipeline.text_tokenizer, "a red cat", codes, vocabulary, length=26)
    ids, labels = example["input_ids"], example["labels"]
    assert ids[0] == 1 and ids[4] == vocabulary.begin_of_image_token_id and ids[21] == vocabulary.end_of_image_token_id
    assert torch.equal(ids[5:21], codes + vocabulary.image_token_offset)
    assert torch.equal(labels[5:21], ids[5:21])
    assert (labels[:5] == IGNORE_INDEX).all() and (labels[21:] == IGNORE_INDEX).all()
    assert example["attention_mask"].tolist() == [1] * 22 + [0] * 4
    with pytest.raises(ValueError, match="does not fit"):
        image_sequence(pipeline.text_tokenizer, "a red cat", codes, vocabulary, length=20)


# --------------------------------------------------------------------------------------------------
# logits processors


def test_image_span_processor(pipeline):
    vocabulary = pipeline.vocabulary
    processor = ImageSpanLogitsProcessor(vocabulary, num_tokens_per_image=2)
    begin, end = vocabulary.begin_of_image_token_id, vocabulary.end_of_image_token_id
    image = vocabulary.image_token_offset
    rows = torch.tensor(
        [
            [1, 5, 6, 7],  # text: untouched
            [1, 5, 6, begin],  # span opened: image tokens only
            [1, begin, image, image + 3],  # image complete: only <end_of_image>
            [begin, image, image, end],  # span closed: text again
        ]
    )
    scores = processor(rows, torch.zeros(4, len(pipeline.text_tokenizer)))
    allowed = torch.isfinite(scores)
    assert allowed[0].all() and allowed[3].all()
    assert allowed[1].nonzero().flatten().tolist() == list(vocabulary.image_token_ids)
    assert allowed[2].nonzero().flatten().tolist() == [end]


def test_guidance_one_equals_plain_sampling():
    torch.manual_seed(0)
    conditional, unconditional = torch.randn(3, 40), torch.randn(3, 40)
    scores = torch.cat([conditional, unconditional])
    assert torch.equal(ClassifierFreeGuidanceLogitsProcessor(1.0)(None, scores), torch.cat([conditional, conditional]))
    guided = ClassifierFreeGuidanceLogitsProcessor(3.0)(None, scores)
    assert torch.allclose(guided[:3], unconditional + 3 * (conditional - unconditional))
    assert torch.equal(guided[:3], guided[3:])
    unguided = ClassifierFreeGuidanceLogitsProcessor(1.0)(None, scores)
    paired = SeededSamplingLogitsProcessor(seeded(5), paired=True)(None, unguided)
    plain = SeededSamplingLogitsProcessor(seeded(5))(None, conditional)
    assert torch.equal(paired[:3], plain) and torch.equal(paired[3:], plain)
    assert torch.equal(torch.isfinite(plain).sum(dim=1), torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match="conditional then unconditional"):
        ClassifierFreeGuidanceLogitsProcessor(2.0)(None, conditional)


# --------------------------------------------------------------------------------------------------
# pipeline


@torch.no_grad()
def test_generation_returns_images_and_is_reproducible(pipeline):
    prompts = ["a red cat", "the big blue bird in the sky"]
    images = pipeline(prompts, generator=seeded(1)).images
    size = TINY_V2FLOW["sample_size"] * TINY_V2FLOW["vae_downsample_factor"]
    assert len(images) == 2 and images[0].size == (size, size)
    codes = pipeline.generate_image_tokens(prompts, generator=seeded(2), top_k=5, top_p=0.9, temperature=0.7)
    assert codes.shape == (2, pipeline.num_image_tokens) and 0 <= int(codes.min()) and int(codes.max()) < 16
    again = pipeline.generate_image_tokens(prompts, generator=seeded(2), top_k=5, top_p=0.9, temperature=0.7)
    assert torch.equal(codes, again)
    # top_k=1 is greedy: with and without the KV cache the same tokens come
    greedy = pipeline.generate_image_tokens(prompts, top_k=1)
    assert torch.equal(greedy, pipeline.generate_image_tokens(prompts, top_k=1, use_cache=False))
    guided = pipeline.generate_image_tokens(prompts, guidance_scale=4.0, negative_prompt="dog", generator=seeded(3))
    assert guided.shape == codes.shape
    pixels = pipeline("a cat", guidance_scale=2.0, generator=seeded(4), output_type="pt").images
    assert pixels.shape == (1, 3, size, size)
    with pytest.raises(ValueError, match="top_p"):
        pipeline.generate_image_tokens("a cat", top_p=0.0)
    with pytest.raises(ValueError, match="negative prompts"):
        pipeline.generate_image_tokens(["a", "b"], negative_prompt=["x"], guidance_scale=2.0)


@torch.no_grad()
def test_guidance_one_pipeline_equals_generate_with_plain_sampling(pipeline):
    """guidance_scale=1 runs one stream: exactly generate() with the image-span mask and seeded sampling."""
    from transformers import LogitsProcessorList

    vocabulary, length = pipeline.vocabulary, pipeline.num_image_tokens
    codes = pipeline.generate_image_tokens("a photo of a dog", guidance_scale=1.0, generator=seeded(7))
    ids = torch.tensor([pipeline.text_tokenizer("a photo of a dog").input_ids + [vocabulary.begin_of_image_token_id]])
    processors = LogitsProcessorList(
        [ImageSpanLogitsProcessor(vocabulary, length), SeededSamplingLogitsProcessor(seeded(7))]
    )
    output = pipeline.language_model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        logits_processor=processors,
        do_sample=False,
        max_new_tokens=length,
        pad_token_id=3,
        eos_token_id=None,
    )
    assert torch.equal(codes[0], vocabulary.ids_to_image_tokens(output[0, -length:]))


@torch.no_grad()
def test_pipeline_save_load_round_trip(pipeline, tmp_path):
    expected = pipeline(["a cat", "a dog"], guidance_scale=2.0, generator=seeded(9), output_type="pt").images
    pipeline.save_pretrained(tmp_path)
    loaded = V2FlowLlamaPipeline.from_pretrained(tmp_path)
    assert isinstance(loaded.tokenizer, V2FlowModel) and isinstance(loaded.language_model, LlamaForCausalLM)
    assert loaded.vocabulary == pipeline.vocabulary
    again = loaded(["a cat", "a dog"], guidance_scale=2.0, generator=seeded(9), output_type="pt").images
    assert again.shape[0] == 2 and torch.equal(again, expected)
    with pytest.raises(ValueError, match="lacks"):
        V2FlowLlamaPipeline(pipeline.vae, pipeline.tokenizer, tiny_llama(), tiny_text_tokenizer())


# --------------------------------------------------------------------------------------------------
# token-id cache and training


def _class_folder(root: Path, per_class: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            array = (rng.random((10, 10, 3)) * 255).astype(np.uint8)
            Image.fromarray(array).save(root / name / f"{index}.png")
    return root


@pytest.fixture(scope="module")
def token_cache(tmp_path_factory):
    """A V2FlowPipeline folder, a (non-extended) tiny LLaMA folder and the token-id cache of six images."""
    root = tmp_path_factory.mktemp("llama")
    language_model, text_tokenizer = tiny_llama(), tiny_text_tokenizer()
    language_model.save_pretrained(root / "llama")
    text_tokenizer.save_pretrained(root / "llama")
    V2FlowPipeline(vae=tiny_dcae(), tokenizer=tiny_v2flow(language_model)).save_pretrained(root / "v2flow")
    encoder = load_autoencoder(str(root / "v2flow"))
    cache_latents(
        encoder,
        _class_folder(root / "images"),
        root / "cache",
        resolution=8,
        flip=True,
        batch_size=4,
        shard_size=4,
        progress=False,
    )
    return root


def test_token_cache_holds_v2flow_ids(token_cache):
    rows = load_latent_cache(token_cache / "cache")
    assert rows.column_names == ["key", "label", "image_tokens", "image_tokens_flip"]
    assert rows[0]["image_tokens"].shape == (16,) and rows[0]["image_tokens"].dtype == torch.int64
    assert rows.cache_info["class_names"] == ["cat", "dog"]
    pipe = V2FlowPipeline.from_pretrained(token_cache / "v2flow")
    image = Image.open(token_cache / "images" / rows[4]["key"])
    expected = pipe.encode_images([image], generator=seeded(4)).image_tokens[0]  # image i: seed i
    assert torch.equal(rows[4]["image_tokens"], expected)
    flipped = pipe.encode_images([image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)], generator=seeded(4))
    assert torch.equal(rows[4]["image_tokens_flip"], flipped.image_tokens[0])


def _run(arguments):
    return run_script("train_v2flow_llama", arguments)


def _losses(output: Path) -> list[float]:
    lines = (output / "metrics.csv").read_text().splitlines()
    column = lines[0].split(",").index("image_token_loss")
    return [float(line.split(",")[column]) for line in lines[1:]]


def test_training_reduces_the_image_token_loss_and_saves_a_pipeline(token_cache, tmp_path):
    output = _run(
        [
            "--language-model",
            token_cache / "llama",
            "--image-pipeline",
            token_cache / "v2flow",
            "--tokens",
            token_cache / "cache",
            "--output-dir",
            tmp_path / "run",
            "--max-steps",
            30,
            "--batch-size",
            6,
            "--lr",
            1e-2,
            "--min-lr",
            1e-2,
            "--log-every",
            1,
            "--checkpoint-every",
            0,
            "--max-prompt-tokens",
            2,
            "--prompt-dropout",
            0.0,
            "--ema-decay",
            0.5,
            "--ema-start",
            0,
        ]
    )
    losses = _losses(output)
    assert (output / "language_model_ema" / "tokenizer.json").is_file()
    assert len(losses) == 30 and np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    pipe = V2FlowLlamaPipeline.from_pretrained(output / "pipeline")
    images = pipe("cat", generator=seeded(0), output_type="np").images
    assert images.shape == (1, 8, 8, 3)


def test_lora_training_with_captions(token_cache, tmp_path):
    pytest.importorskip("peft")
    rows = load_latent_cache(token_cache / "cache")
    colours = ["red", "blue"]
    captions = {key: f"a photo of a {colours[index % 2]} {key.split('/')[0]}" for index, key in enumerate(rows["key"])}
    (tmp_path / "captions.json").write_text(json.dumps(captions))
    output = _run(
        [
            "--language-model",
            token_cache / "llama",
            "--image-pipeline",
            token_cache / "v2flow",
            "--tokens",
            token_cache / "cache",
            "--output-dir",
            tmp_path / "run",
            "--max-steps",
            20,
            "--batch-size",
            6,
            "--lr",
            2e-2,
            "--min-lr",
            2e-2,
            "--log-every",
            1,
            "--checkpoint-every",
            0,
            "--conditioning",
            "text",
            "--captions",
            tmp_path / "captions.json",
            "--lora-rank",
            4,
            "--gradient-checkpointing",
        ]
    )
    losses = _losses(output)
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5])
    assert (output / "adapter" / "adapter_config.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(output / "language_model")
    base, text_tokenizer = AutoModelForCausalLM.from_pretrained(token_cache / "llama"), tiny_text_tokenizer()
    image_tokenizer = V2FlowPipeline.from_pretrained(token_cache / "v2flow").tokenizer
    vocabulary = extend_vocabulary(base, text_tokenizer, image_tokenizer)  # the run's starting point
    # LoRA trains the new token rows only (input and output): text rows stay bit-identical
    for name in ("get_input_embeddings", "get_output_embeddings"):
        trained, initial = getattr(merged, name)().weight, getattr(base, name)().weight
        text, image = slice(0, TINY_V2FLOW["llm_vocab_size"]), list(vocabulary.image_token_ids)
        assert torch.equal(trained[text], initial[text]), name
        assert not torch.allclose(trained[image], initial[image]), name
    with pytest.raises(ValueError, match="captions"):
        _run(
            [
                "--language-model",
                token_cache / "llama",
                "--image-pipeline",
                token_cache / "v2flow",
                "--tokens",
                token_cache / "cache",
                "--output-dir",
                tmp_path / "bad",
                "--conditioning",
                "text",
            ]
        )


def _training_arguments(token_cache, output, *extra):
    return [
        "--language-model", token_cache / "llama", "--image-pipeline", token_cache / "v2flow",
        "--tokens", token_cache / "cache", "--output-dir", output, "--max-steps", 3, "--lr", 1e-2,
        "--min-lr", 1e-2, "--log-every", 1, "--checkpoint-every", 0, "--max-prompt-tokens", 2, *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_ddp_two_processes_equal_one(token_cache, tmp_path):
    """2 processes x batch 3 see the samples 1 process x batch 6 sees; with DDP's averaged gradients both
    runs train the same language model."""
    single = _run(_training_arguments(token_cache, tmp_path / "single", "--batch-size", 6))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
        "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        str(REPO_ROOT / "training_scripts" / "train_v2flow_llama.py"),
        *map(str, _training_arguments(token_cache, tmp_path / "ddp", "--batch-size", 3)),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    one = AutoModelForCausalLM.from_pretrained(single / "language_model").state_dict()
    two = AutoModelForCausalLM.from_pretrained(tmp_path / "ddp" / "language_model").state_dict()
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], atol=1e-5, rtol=1e-4, msg=key)
    np.testing.assert_allclose(_losses(tmp_path / "ddp"), _losses(single), rtol=1e-4)


def test_push_to_hub_card_runs_its_snippet(pipeline, tmp_path, monkeypatch):
    from huggingface_hub import ModelCard

    from hf_vtok import hub
    from tests.hub.test_hub import FakeHub, run_snippet, usage_snippet

    fake = FakeHub(tmp_path, monkeypatch)
    pipeline.push_to_hub("me/v2flow-llama")
    assert {"model_index.json", "language_model/config.json", "text_tokenizer/tokenizer.json", "vae/config.json",
            "tokenizer/config.json", "tokenizer/modeling_v2flow.py"} <= fake.files()  # fmt: skip
    card = ModelCard.load(fake.pushed / "README.md")
    assert card.data.pipeline_tag == "text-to-image" and "LlamaForCausalLM generates 16 V²Flow" in card.content
    namespace = run_snippet(usage_snippet(hub.model_card(pipeline, repo_id=str(fake.pushed))), tmp_path)
    assert len(namespace["images"]) == 1 and isinstance(namespace["images"][0], Image.Image)


def test_lora_run_resumes_exactly(token_cache, tmp_path):
    """2 steps, then --resume to 4, trains the adapter 4 straight steps train (prompt dropout and flips drawn
    per sample position, optimizer and adapter state from the checkpoint)."""
    pytest.importorskip("peft")
    from safetensors.torch import load_file

    lora = ("--lora-rank", 2, "--batch-size", 4, "--prompt-dropout", 0.5)
    straight = _run(_training_arguments(token_cache, tmp_path / "straight", *lora, "--max-steps", 4))
    _run(_training_arguments(token_cache, tmp_path / "resumed", *lora, "--max-steps", 2))
    resumed = _run(_training_arguments(token_cache, tmp_path / "resumed", *lora, "--max-steps", 4, "--resume"))
    assert _losses(resumed) == _losses(straight)
    one = load_file(straight / "adapter" / "adapter_model.safetensors")
    two = load_file(resumed / "adapter" / "adapter_model.safetensors")
    assert one.keys() == two.keys() and all(torch.equal(one[key], two[key]) for key in one)
