"""Model cards, push_to_hub (upload mocked) and remote code (trust_remote_code in a fresh process).

Nothing is uploaded: ``HfApi.create_repo`` / ``HfApi.upload_folder`` are replaced by stand-ins that
record the folder that would be pushed.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.hf_api import RepoUrl
from PIL import Image
from safetensors.torch import load_file, save_file

import hf_vtok
from hf_vtok import hub
from hf_vtok.hub.loading import load_pipeline
from hf_vtok.metrics import EVALUATE_MODULES
from hf_vtok.pipelines.dit_1d import DiT1DPipeline
from hf_vtok.registry import FAMILIES
from hf_vtok.remote_code import NATIVE_ENTRIES

REPO_ROOT = Path(__file__).resolve().parents[2]


def tiny_tokenizer(family: str):
    torch.manual_seed(0)
    if family == "vitok":
        return hf_vtok.ViTokModel(hf_vtok.ViTokConfig.from_variant("w32_d1_h2-w32_d1_h2/1x8x4")).eval()
    if family == "flowmo":
        config = hf_vtok.FlowMoConfig(
            image_size=16, patch_size=4, code_length=4, context_dim=6, bits_per_token=3, mup_width=2, enc_mup_width=2,
            encoder_depth=1, decoder_depth=1, base_hidden_size=64, num_attention_heads=2, base_axes_dim=(8, 12, 12),
            num_inference_steps=2,
        )  # fmt: skip
        return hf_vtok.FlowMoModel(config).eval()
    sizes = dict(
        image_size=32, encoder_patch_size=8, decoder_patch_size=8, num_latent_tokens=4, latent_channels=8,
        encoder_hidden_size=32, encoder_num_layers=1, encoder_num_heads=4, decoder_hidden_size=32,
        decoder_num_layers=1, decoder_num_heads=4,
    )  # fmt: skip
    if family == "softvq":
        return hf_vtok.SoftVQModel(hf_vtok.SoftVQConfig(codebook_size=16, num_codebooks=2, **sizes)).eval()
    return hf_vtok.MAETokModel(hf_vtok.MAETokConfig(**sizes)).eval()


def tiny_generator(tokenizer, kind="sit"):
    torch.manual_seed(0)
    cls = hf_vtok.SiTTransformer1DModel if kind == "sit" else hf_vtok.DiTTransformer1DModel
    config = tokenizer.config
    return cls(
        in_channels=config.latent_channels,
        num_tokens=config.num_latent_tokens,
        hidden_size=32,
        num_layers=1,
        num_attention_heads=2,
    ).eval()


class FakeHub:
    """Stands in for the Hub: records what ``upload_folder`` would push (a copy of the folder)."""

    def __init__(self, tmp_path, monkeypatch):
        self.pushed = tmp_path / "pushed"
        self.calls = []
        monkeypatch.setattr(HfApi, "create_repo", self.create_repo)
        monkeypatch.setattr(HfApi, "upload_folder", self.upload_folder)

    def create_repo(self, repo_id, **kwargs):
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        shutil.rmtree(self.pushed, ignore_errors=True)
        shutil.copytree(folder_path, self.pushed)
        self.calls.append({"repo_id": repo_id, **kwargs})
        return f"https://huggingface.co/{repo_id}/commit/0"

    def files(self) -> set[str]:
        return {str(path.relative_to(self.pushed)) for path in self.pushed.rglob("*") if path.is_file()}


def usage_snippet(card) -> str:
    return re.search(r"```python\n(.*?)```", card.content, re.S).group(1)


def run_snippet(snippet: str, cwd: Path) -> dict:
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        namespace = {}
        exec(compile(snippet, "<model card>", "exec"), namespace)
        return namespace
    finally:
        os.chdir(previous)


@pytest.fixture
def photo(tmp_path) -> Path:
    array = (torch.rand(40, 48, 3) * 255).to(torch.uint8).numpy()
    Image.fromarray(array).save(tmp_path / "photo.jpg")
    return tmp_path / "photo.jpg"


# --------------------------------------------------------------------------------------------------
# cards


@pytest.mark.parametrize("family", ["vitok", "flowmo", "softvq", "maetok"])
def test_tokenizer_push_card_and_files(family, tmp_path, monkeypatch, photo):
    model = tiny_tokenizer(family)
    fake = FakeHub(tmp_path, monkeypatch)
    preset = {
        "vitok": "vitok-v2-350M-f16x64",
        "flowmo": "flowmo-lo",
        "softvq": "softvq-l-64",
        "maetok": "maetok-b-128",
    }
    model.push_to_hub("me/tiny", preset=preset[family], commit_message="tiny")
    files = fake.files()
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json"} <= files
    assert {f"modeling_{family}.py", f"configuration_{family}.py"} <= files  # remote code
    assert fake.calls == [{"repo_id": "me/tiny", "commit_message": "tiny", "commit_description": None,
                           "revision": None, "create_pr": False}]  # fmt: skip
    card = ModelCard.load(fake.pushed / "README.md")
    if family == "vitok":  # an example of a generated card, beside the demo's screenshot
        (REPO_ROOT / "outputs").mkdir(exist_ok=True)
        shutil.copy(fake.pushed / "README.md", REPO_ROOT / "outputs" / "model_card_vitok.md")
    entry = hf_vtok.PRETRAINED[preset[family]]
    # a library the Hub knows (its "use this model" snippet), custom_code for the remote code, an install line
    assert card.data.library_name == "transformers" and card.data.license == entry.license
    assert card.data.base_model == entry.repo_id and card.data.pipeline_tag == "image-feature-extraction"
    assert {"image-tokenizer", "custom_code", "hf_vtok"} <= set(card.data.tags)
    assert "```bibtex\n@" in card.content and entry.repo_id in card.content
    assert "```bash\npip install hf_vtok\n```" in card.content
    assert "custom_code" not in hub.model_card(model, remote_code=False).data.tags
    # the usage snippet runs as written, against the pushed folder
    local = hub.model_card(model, repo_id=str(fake.pushed))
    namespace = run_snippet(usage_snippet(local), photo.parent)
    assert isinstance(namespace["image"], Image.Image)


def test_card_shows_the_eval_table(tmp_path, monkeypatch):
    """The table and model-index of a real ``hf-vtok eval`` run."""
    pytest.importorskip("torchmetrics")
    pytest.importorskip("matplotlib")
    from hf_vtok.cli import main as cli_main

    model = tiny_tokenizer("vitok")
    folder = tmp_path / "tiny-vitok"
    model.save_pretrained(folder)
    hf_vtok.ViTokImageProcessor(patch_size=8).save_pretrained(folder)
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(2):
        Image.fromarray((torch.rand(40, 48, 3) * 255).to(torch.uint8).numpy()).save(photos / f"{index}.png")
    cli_main(["eval", "--model", str(folder), "--data", str(photos), "--metrics", "psnr,ssim", "--resolution", "32",
              "--out", str(tmp_path / "eval")])  # fmt: skip
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    card = hub.model_card(model, repo_id="me/tiny-vitok", eval_results=tmp_path / "eval")
    assert "## Evaluation" in card.content and "| tiny-vitok |" in card.content and "PSNR ↑" in card.content
    # values rounded as the table shows them; the data named by its folder, never by its local path
    metrics = {result.metric_type: result.metric_value for result in card.data.eval_results}
    row = results["models"][0]
    assert metrics == {"psnr": round(row["psnr"], 2), "ssim": round(row["ssim"], 4)}
    assert {result.dataset_type for result in card.data.eval_results} == {"photos"}
    leaks = [line for line in str(card).splitlines() if str(tmp_path) in line]
    assert not leaks and "| tiny-vitok | 16 |" in card.content, leaks  # integer token counts
    assert "model-index" in str(card) and ModelCard(str(card)).data.eval_results[0].metric_type == "psnr"
    # a Hub dataset id when given; the reconstruction grid embedded, and pushed beside the card
    card = hub.model_card(model, eval_results=tmp_path / "eval", eval_dataset="ILSVRC/imagenet-1k")
    assert {result.dataset_type for result in card.data.eval_results} == {"ILSVRC/imagenet-1k"}
    assert "![reconstructions of the evaluation](reconstructions.png)" in card.content
    fake = FakeHub(tmp_path, monkeypatch)
    model.push_to_hub("me/tiny-vitok", eval_results=tmp_path / "eval", remote_code=False)
    assert "reconstructions.png" in fake.files() and "![reconstructions" in (fake.pushed / "README.md").read_text()
    without = hub.model_card(model, repo_id="me/tiny-vitok")
    assert "## Evaluation" not in without.content
    with pytest.raises(FileNotFoundError, match="no evaluation results"):
        hub.model_card(model, eval_results=tmp_path / "nowhere")


def test_generator_and_pipeline_push(tmp_path, monkeypatch):
    tokenizer = tiny_tokenizer("softvq")
    transformer = tiny_generator(tokenizer, "dit")
    fake = FakeHub(tmp_path, monkeypatch)
    transformer.push_to_hub("me/dit", preset="dit-xl_softvq-l-64")
    assert {"README.md", "config.json", "diffusion_pytorch_model.safetensors", "modeling_dit_1d.py"} <= fake.files()
    assert json.loads((fake.pushed / "config.json").read_text())["auto_map"] == {
        "AutoModel": "modeling_dit_1d.DiTTransformer1DModel"
    }
    card = ModelCard.load(fake.pushed / "README.md")
    assert (
        card.data.pipeline_tag == "unconditional-image-generation" and "@inproceedings{peebles2023dit" in card.content
    )
    # generators and pipelines are diffusers objects; a generator's base models: its release and its tokenizer's
    entry = hf_vtok.PRETRAINED["dit-xl_softvq-l-64"]
    assert card.data.library_name == "diffusers"
    assert card.data.base_model == [entry.repo_id, hf_vtok.PRETRAINED[entry.tokenizer].repo_id]
    transformer_folder = tmp_path / "transformer"
    shutil.copytree(fake.pushed, transformer_folder)
    namespace = run_snippet(usage_snippet(hub.model_card(transformer, repo_id=str(transformer_folder))), tmp_path)
    assert namespace["prediction"].shape == (2, 4, 16)  # learned sigma: twice the channels

    pipe = DiT1DPipeline.from_components(transformer, tokenizer)
    pipe.push_to_hub("me/dit-pipeline")
    files = fake.files()
    assert {"README.md", "model_index.json", "scheduler/scheduler_config.json", "vae/config.json",
            "vae/modeling_softvq.py", "transformer/modeling_dit_1d.py", "pipeline_dit_1d.py",
            "scheduler/scheduling_gaussian_diffusion.py"} <= files  # fmt: skip
    index = json.loads((fake.pushed / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_dit_1d", "DiT1DPipeline"]  # diffusers' custom pipeline
    assert index["transformer"] == ["modeling_dit_1d", "DiTTransformer1DModel"]
    assert index[NATIVE_ENTRIES]["transformer"] == ["hf_vtok.models.dit_1d.modeling_dit_1d", "DiTTransformer1DModel"]
    card = ModelCard.load(fake.pushed / "README.md")
    assert "pipeline" in card.data.tags and "custom_code" in card.data.tags
    snippet = usage_snippet(hub.model_card(pipe, repo_id=str(fake.pushed))).replace("250", "3")
    namespace = run_snippet(snippet, tmp_path)
    assert len(namespace["images"]) == 2 and isinstance(namespace["images"][0], Image.Image)


def test_every_family_has_a_template():
    for family in FAMILIES:
        assert hub.template_path(family).is_file()
    with pytest.raises(ValueError, match="no model card template for 'nope'"):
        hub.template_path("nope")


WHEEL_EVALUATE = """
import sys
import evaluate
import torch
import hf_vtok
from hf_vtok.metrics import EVALUATE_MODULES, evaluate_module_path
assert hf_vtok.__file__.startswith(sys.argv[1]), hf_vtok.__file__  # the unpacked wheel, not the source tree
for name in EVALUATE_MODULES:
    assert evaluate_module_path(name).startswith(sys.argv[1])
    evaluate.load(evaluate_module_path(name), cache_dir=sys.argv[2])
psnr = evaluate.load(evaluate_module_path("psnr"), cache_dir=sys.argv[2])
image = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
print(psnr.compute(predictions=(image + 0.1).clamp(0, 1), references=image)["psnr"])
"""


@pytest.mark.slow
def test_package_data_ships_in_the_wheel(tmp_path):
    """A non-editable install has the templates and the ``evaluate`` module scripts (package data), and
    ``evaluate.load`` loads every module from the installed (unpacked) wheel, offline."""
    from tests.testing_utils.packaging import build_wheel

    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {name for name in names if name.startswith("hf_vtok/model_cards/")}
    assert shipped == {f"hf_vtok/model_cards/{info.card_template}" for info in FAMILIES.values()}
    modules = {name for name in names if name.startswith("hf_vtok/metrics/evaluate_modules/")}
    assert modules == {f"hf_vtok/metrics/evaluate_modules/{name}/{name}.py" for name in EVALUATE_MODULES}
    installed = tmp_path / "site-packages"
    zipfile.ZipFile(wheel).extractall(installed)
    env = {**os.environ, "PYTHONPATH": str(installed), "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "m")}
    result = subprocess.run(
        [sys.executable, "-c", WHEEL_EVALUATE, str(installed), str(tmp_path / "cache")],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert 15 < float(result.stdout.split()[-1]) < 30


# --------------------------------------------------------------------------------------------------
# remote code


FRESH_PROCESS = """
import sys
sys.modules["hf_vtok"] = None  # hf_vtok cannot be imported: only the repository's own code is there
import torch
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModel
import diffusers

folder, generator_folder, io = sys.argv[1:4]
try:
    AutoModel.from_pretrained(folder)
    raise SystemExit("loaded custom code without trust_remote_code")
except ValueError as error:
    assert "custom code" in str(error), error
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
tensors = load_file(io)
pixel_values = processor(tensors["image"], return_tensors="pt").pixel_values
assert torch.equal(pixel_values, tensors["pixel_values"])
with torch.no_grad():
    encoded = model.encode(pixel_values)
    assert torch.equal(encoded.latents, tensors["latents"])
    assert torch.equal(model.decode(encoded.latents).sample, tensors["sample"])
generator = diffusers.AutoModel.from_pretrained(generator_folder, trust_remote_code=True).eval()
with torch.no_grad():
    velocity = generator(tensors["latents"], timestep=torch.tensor([0.5]), class_labels=torch.tensor([3])).sample
assert torch.equal(velocity, tensors["velocity"])
print("remote code OK", type(model).__name__, type(generator).__name__)
"""


def run_without_hf_vtok(script: str, tmp_path, *arguments) -> subprocess.CompletedProcess:
    """``python -c script *arguments`` in a fresh process, offline, without this checkout on its path (the script
    blocks ``import hf_vtok`` itself) and with its own module cache for remote code."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    # this process's torch threads: oneDNN's sums (the default inference path) depend on the thread count
    environment["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, arguments)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        timeout=600,
    )


@pytest.mark.slow
def test_trust_remote_code_in_a_fresh_process_without_hf_vtok(tmp_path, monkeypatch):
    model = tiny_tokenizer("softvq")
    generator = tiny_generator(model, "sit")
    processor = hf_vtok.LatentTokenImageProcessor.for_model(model.config)
    fake = FakeHub(tmp_path, monkeypatch)
    model.push_to_hub("me/softvq", image_processor=processor)
    shutil.copytree(fake.pushed, tmp_path / "tokenizer")
    generator.push_to_hub("me/sit")
    shutil.copytree(fake.pushed, tmp_path / "generator")

    image = (torch.rand(3, 40, 40) * 255).to(torch.uint8)
    pixel_values = processor(image, return_tensors="pt").pixel_values
    with torch.no_grad():
        latents = model.encode(pixel_values).latents
        sample = model.decode(latents).sample
        velocity = generator(latents, timestep=torch.tensor([0.5]), class_labels=torch.tensor([3])).sample
    io = tmp_path / "io.safetensors"
    save_file({"image": image, "pixel_values": pixel_values, "latents": latents, "sample": sample,
               "velocity": velocity}, io)  # fmt: skip
    result = run_without_hf_vtok(FRESH_PROCESS, tmp_path, tmp_path / "tokenizer", tmp_path / "generator", io)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "remote code OK SoftVQModel SiTTransformer1DModel" in result.stdout
    # with hf_vtok imported, the registered classes load and the auto_map is not used
    from transformers import AutoModel

    native = AutoModel.from_pretrained(tmp_path / "tokenizer")
    assert type(native) is hf_vtok.SoftVQModel
    assert load_file(tmp_path / "tokenizer" / "model.safetensors").keys() == native.state_dict().keys()


def test_register_for_auto_class_writes_the_bundle_on_save(tmp_path, monkeypatch):
    monkeypatch.setattr(hf_vtok.MAETokModel, "_remote_auto_class", None)  # undone after the test
    hf_vtok.MAETokModel.register_for_auto_class()
    tiny_tokenizer("maetok").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_maetok.MAETokConfig",
        "AutoModel": "modeling_maetok.MAETokModel",
    }
    bundled = {path.name for path in tmp_path.glob("*.py")}
    assert {"modeling_maetok.py", "configuration_maetok.py", "hf_vtok_modules_attention.py"} <= bundled
    source = (tmp_path / "modeling_maetok.py").read_text()
    assert "from ..latent_token_vit" not in source
    assert "from .hf_vtok_models_latent_token_vit_modeling_latent_token_vit import" in source
    # a lazily imported part of hf_vtok that is not bundled (push_to_hub's cards) says what it needs
    publishing = (tmp_path / "hf_vtok_publishing.py").read_text()
    assert "raise ImportError('publishing: this needs hf_vtok installed (pip install hf_vtok)')" in publishing
    assert not any("hub" in name or "commands" in name for name in bundled)  # the application layer stays out


def test_v2flow_pipeline_push_runs_its_snippet(tmp_path, monkeypatch, photo):
    from diffusers import AutoencoderDC

    torch.manual_seed(0)
    tokenizer = hf_vtok.V2FlowModel(hf_vtok.V2FlowConfig(
        latent_channels=4, sample_size=4, vae_downsample_factor=2, scaling_factor=0.5, connector_hidden_size=8,
        connector_depth=1, llm_vocab_size=20, llm_embed_dim=12, codebook_size=16, hidden_size=16,
        encoder_num_layers=1, decoder_num_layers=1, num_attention_heads=2, flow_head_width=16, flow_head_depth=1,
        flow_num_inference_steps=2, num_ar_steps=2,
    )).eval()  # fmt: skip
    vae = AutoencoderDC(
        in_channels=3, latent_channels=4, attention_head_dim=4, encoder_block_types="ResBlock",
        decoder_block_types="ResBlock", encoder_block_out_channels=(8, 16), decoder_block_out_channels=(8, 16),
        encoder_layers_per_block=(1, 1), decoder_layers_per_block=(1, 1), encoder_qkv_multiscales=((), ()),
        decoder_qkv_multiscales=((), ()), decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.5,
    ).eval()  # fmt: skip
    pipe = hf_vtok.V2FlowPipeline(vae=vae, tokenizer=tokenizer)
    fake = FakeHub(tmp_path, monkeypatch)
    pipe.push_to_hub("me/v2flow")
    assert {
        "model_index.json",
        "vae/config.json",
        "tokenizer/config.json",
        "tokenizer/modeling_v2flow.py",
    } <= fake.files()
    card = ModelCard.load(fake.pushed / "README.md")
    assert card.data.license == "mit" and "arXiv:2503.07493" in card.content
    namespace = run_snippet(usage_snippet(hub.model_card(pipe, repo_id=str(fake.pushed))), photo.parent)
    assert namespace["ids"].shape == (1, tokenizer.config.sample_size**2) and isinstance(
        namespace["image"], Image.Image
    )


# --------------------------------------------------------------------------------------------------
# remote code of pipelines (diffusers' custom pipelines)


def tiny_pipelines() -> dict:
    """name -> (one tiny pipeline of each hf_vtok class, the call arguments besides ``generator``)."""
    from tests.pipelines.v2flow.test_pipeline_v2flow_llama import tiny_llama_pipeline
    from tests.testing_utils.tiny_models import (
        tiny_dcae,
        tiny_dit_pipeline,
        tiny_sit_pipeline,
        tiny_v2flow_model,
        tiny_vitok_dit_pipeline,
    )

    torch.manual_seed(0)
    class_conditional = dict(class_labels=[1, 4], num_inference_steps=2, guidance_scale=2.0)
    tokens = torch.randint(0, 16, (2, 16), generator=torch.Generator().manual_seed(5))
    return {
        "sit": (tiny_sit_pipeline(), class_conditional),
        "dit": (tiny_dit_pipeline(), class_conditional),
        "vitok_dit": (tiny_vitok_dit_pipeline(), class_conditional),
        "v2flow": (hf_vtok.V2FlowPipeline(vae=tiny_dcae(), tokenizer=tiny_v2flow_model()), {"image_tokens": tokens}),
        "v2flow_llama": (tiny_llama_pipeline(), {"prompt": ["a red cat", "the dog"], "guidance_scale": 2.0}),
    }


def generate(pipe, call: dict) -> torch.Tensor:
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        return pipe(**call, generator=torch.Generator().manual_seed(0), output_type="pt").images


PIPELINES_FRESH_PROCESS = """
import json, sys
sys.modules["hf_vtok"] = None  # hf_vtok cannot be imported: only the repositories' own code is there
import torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file

expected = load_file(sys.argv[1])
for folder in sys.argv[2:]:
    name = folder.rpartition("/")[2]
    try:
        DiffusionPipeline.from_pretrained(folder)
        raise SystemExit(f"{name}: loaded custom code without trust_remote_code")
    except ValueError as error:
        assert "trust_remote_code" in str(error), error
    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    classes = [type(pipe), *(type(component) for component in pipe.components.values())]
    assert type(pipe).__module__.startswith("diffusers_modules."), type(pipe).__module__
    assert not any(cls.__module__.startswith("hf_vtok") for cls in classes), classes
    call = json.loads(open(folder + ".json").read())
    call.update({key.partition("/")[2]: value for key, value in expected.items() if key.startswith(name + "/")})
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        images = pipe(**call, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert torch.equal(images, expected[name]), name
    print("remote code OK", name, type(pipe).__name__)
"""


@pytest.mark.slow
def test_every_pipeline_loads_with_remote_code_in_a_fresh_process_without_hf_vtok(tmp_path, monkeypatch):
    """A pushed pipeline: ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` where hf_vtok cannot
    be imported gives the same images; with hf_vtok, its own class and ``hub.load_pipeline`` load it natively."""
    from diffusers import DiffusionPipeline

    fake = FakeHub(tmp_path, monkeypatch)
    expected = {}
    folders = []
    for name, (pipe, call) in tiny_pipelines().items():
        expected[name] = generate(pipe, call)
        pipe.push_to_hub(f"me/{name}")
        folder = tmp_path / name
        shutil.copytree(fake.pushed, folder)
        folders.append(str(folder))
        tensors = {key: value for key, value in call.items() if isinstance(value, torch.Tensor)}
        expected.update({f"{name}/{key}": value for key, value in tensors.items()})
        (tmp_path / f"{name}.json").write_text(json.dumps({k: v for k, v in call.items() if k not in tensors}))
        for native in (type(pipe).from_pretrained(folder), load_pipeline(folder)):
            assert type(native) is type(pipe)
            parts = zip(native.components.values(), pipe.components.values())
            assert all(type(native_part) is type(part) for native_part, part in parts)
            assert torch.equal(generate(native, call), expected[name]), name
        with pytest.raises(ValueError, match="trust_remote_code"):
            DiffusionPipeline.from_pretrained(folder)  # diffusers runs a repository's custom code only when told
    io = tmp_path / "expected.safetensors"
    save_file(expected, io)
    result = run_without_hf_vtok(PIPELINES_FRESH_PROCESS, tmp_path, io, *folders)
    assert result.returncode == 0, result.stdout + result.stderr[-5000:]
    for name, (pipe, _) in tiny_pipelines().items():
        assert f"remote code OK {name} {type(pipe).__name__}" in result.stdout


def test_register_for_auto_class_on_a_pipeline_writes_its_remote_code(tmp_path, monkeypatch):
    from tests.testing_utils.tiny_models import tiny_sit_pipeline

    for attribute in ("_remote_auto_class", "_auto_class"):
        monkeypatch.setattr(hf_vtok.SiTPipeline, attribute, None)  # undone after the test
    hf_vtok.SiTPipeline.register_for_auto_class()
    pipe = tiny_sit_pipeline()
    expected = generate(pipe, {"class_labels": [1, 4], "num_inference_steps": 2})
    pipe.save_pretrained(tmp_path, variant="fp16")  # the wrapped save_pretrained keeps diffusers' options
    assert (tmp_path / "transformer" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_sit", "SiTPipeline"] and (tmp_path / "pipeline_sit.py").is_file()
    assert index["scheduler"] == ["scheduling_sit_flow", "SiTFlowScheduler"]
    assert "from .hf_vtok_pipelines_pipeline_utils import" in (tmp_path / "pipeline_sit.py").read_text()
    loaded = hf_vtok.SiTPipeline.from_pretrained(tmp_path, variant="fp16")  # native: the entries put back
    assert type(loaded.scheduler) is hf_vtok.SiTFlowScheduler
    assert torch.equal(generate(loaded, {"class_labels": [1, 4], "num_inference_steps": 2}), expected)


def test_remote_code_of_a_pipeline_names_what_it_cannot_bundle(tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    from hf_vtok.remote_code import write_pipeline_remote_code

    blocks = dict(down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    unet = UNet2DModel(sample_size=8, block_out_channels=(8, 8), norm_num_groups=4, layers_per_block=1, **blocks)
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler())
    pipe.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="DDPMPipeline is not an hf_vtok pipeline"):
        write_pipeline_remote_code(tmp_path, pipe)


# --------------------------------------------------------------------------------------------------
# the card snippets on real photos, with the processor each model is used with

PHOTO_SIZES = {"600x400": (600, 400), "2000x1500": (2000, 1500)}


def real_photo(folder: Path, size: tuple[int, int], name: str = "photo.jpg") -> Path:
    """scikit-image's coffee (600x400) resized to ``size``: a photograph where the snippets read ``photo.jpg``."""
    data = pytest.importorskip("skimage.data")
    Image.fromarray(data.coffee()).resize(size, Image.Resampling.BICUBIC).save(folder / name, quality=95)
    return folder / name


def pushed_default_model(tmp_path, monkeypatch):
    """The embedded default model, loaded as a user would and pushed (FakeHub); returns (model, fake hub)."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(hub.DEFAULT_MODEL_DIR)).eval()
    fake = FakeHub(tmp_path, monkeypatch)
    model.push_to_hub("me/default-vitok")
    return model, fake


def v2flow_pipeline():
    from tests.testing_utils.tiny_models import tiny_dcae, tiny_v2flow_model

    return hf_vtok.V2FlowPipeline(vae=tiny_dcae(), tokenizer=tiny_v2flow_model())


@pytest.mark.parametrize("family", ["vitok", "default_model", "flowmo", "softvq", "maetok", "v2flow"])
def test_every_card_snippet_runs_on_real_photos(family, tmp_path, monkeypatch):
    """The usage snippet of a pushed repo, run as written against the pushed folder, on a 600x400 and a 2000x1500
    photograph (the default model's snippet used to fail on both: its push wrote a 256-token processor)."""
    if family == "default_model":
        model, fake = pushed_default_model(tmp_path, monkeypatch)
    else:
        model = v2flow_pipeline() if family == "v2flow" else tiny_tokenizer(family)
        fake = FakeHub(tmp_path, monkeypatch)
        model.push_to_hub("me/tiny")
    folder = tmp_path / "repo"
    shutil.copytree(fake.pushed, folder)
    snippet = usage_snippet(hub.model_card(model, repo_id=str(folder)))
    for size in PHOTO_SIZES.values():
        workdir = tmp_path / f"{size[0]}x{size[1]}"
        workdir.mkdir()
        real_photo(workdir, size)
        namespace = run_snippet(snippet, workdir)
        image = namespace["image"]
        assert isinstance(image, Image.Image), family
        if family in ("vitok", "default_model"):  # NaFlex: the aspect ratio is kept, within the token budget
            processor = namespace["processor"]
            assert abs(image.width - image.height * size[0] / size[1]) <= processor.patch_size  # to a patch
            tokens = -(-image.width // processor.patch_size) * -(-image.height // processor.patch_size)
            assert tokens <= processor.max_num_patches


def test_push_writes_the_processor_the_model_is_used_with(tmp_path, monkeypatch):
    """The default model's own processor (up to 4096 tokens at patch 8, any photo), not one rebuilt from its
    config; a processor passed explicitly wins; a model built in memory gets its family's (sized for its config)."""
    model, fake = pushed_default_model(tmp_path, monkeypatch)
    pushed = json.loads((fake.pushed / "preprocessor_config.json").read_text())
    own = json.loads((hub.DEFAULT_MODEL_DIR / "preprocessor_config.json").read_text())
    assert {key: pushed[key] for key in own} == own and pushed["max_num_patches"] == 4096
    assert "training_report.json" in fake.files()
    assert hub.processor_in_use(model).max_num_patches == 4096
    explicit = hf_vtok.ViTokImageProcessor(patch_size=8, max_num_patches=64)
    assert hub.processor_in_use(model, explicit) is explicit
    model.push_to_hub("me/default-vitok", image_processor=explicit)
    assert json.loads((fake.pushed / "preprocessor_config.json").read_text())["max_num_patches"] == 64
    in_memory = tiny_tokenizer("vitok")
    assert hub.processor_in_use(in_memory).patch_size == in_memory.config.patch_size
    saved = tmp_path / "saved"
    processor = hub.save_tokenizer(model, saved)  # what a command that saves a model calls
    assert processor.max_num_patches == 4096 and (saved / "preprocessor_config.json").is_file()


def test_default_model_card_says_how_it_was_made(tmp_path, monkeypatch):
    _, fake = pushed_default_model(tmp_path, monkeypatch)
    card = ModelCard.load(fake.pushed / "README.md")
    report = json.loads((hub.DEFAULT_MODEL_DIR / "training_report.json").read_text())
    assert card.data.license == "apache-2.0" and card.data.base_model is None
    assert card.data.library_name == "transformers" and "custom_code" in card.data.tags
    content = card.content
    assert "trained by hf_vtok" in content.replace("**", "") and "training_scripts/make_default_model.py" in content
    assert "converted" not in content.split("## Usage")[0].replace("not converted", "")
    assert "training_report.json" in content and "china.jpg" in content and "CC BY 2.0" in content
    mean = report["held_out"]["mean"]
    assert f"**{mean['psnr']:.2f}**" in content and f"**{mean['ssim']:.4f}**" in content


def test_pipeline_cards_list_every_component_base_model(tmp_path, monkeypatch):
    """A pipeline's base models: its release, its tokenizer's, and any component loaded from a Hub repository."""
    from tests.testing_utils.tiny_models import tiny_sit_pipeline

    pipe = tiny_sit_pipeline()
    entry = hf_vtok.PRETRAINED["sit-xl_maetok-b-128"]
    card = hub.model_card(pipe, repo_id="me/sit", preset=entry.name)
    assert card.data.library_name == "diffusers"
    assert card.data.base_model == [entry.repo_id, hf_vtok.PRETRAINED[entry.tokenizer].repo_id]
    pipe = v2flow_pipeline()
    pipe.vae.register_to_config(_name_or_path="mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers")  # as from_pretrained
    local = tmp_path / "v2flow-tokenizer"
    pipe.tokenizer.save_pretrained(local)
    pipe.tokenizer.name_or_path = str(local)  # a local folder: never listed
    card = hub.model_card(pipe, repo_id="me/v2flow")
    assert card.data.base_model == "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers" and str(local) not in str(card)
    assert "Components: `vae` (SoftVQModel" in hub.model_card(tiny_sit_pipeline(), repo_id="me/sit").content


def test_lora_adapter_card_names_a_hub_id_or_no_base_model(tmp_path):
    """peft writes the local path the base was loaded from as ``base_model``; the adapter card never does."""
    peft = pytest.importorskip("peft")
    model = tiny_tokenizer("maetok")
    base = tmp_path / "base"
    model.save_pretrained(base)
    (base / "original_checkpoint.json").write_text(json.dumps({"preset": "maetok-b-128"}))  # hf-vtok convert --preset
    model.name_or_path = str(base)
    adapter = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=list(model.lora_target_modules)))
    adapter.save_pretrained(tmp_path / "adapter")
    assert str(base) in (tmp_path / "adapter" / "README.md").read_text()  # peft's own card
    hub.write_adapter_card(tmp_path / "adapter")
    card = ModelCard.load(tmp_path / "adapter" / "README.md")
    assert card.data.base_model == "MAETok/maetok-b-128" and str(tmp_path) not in str(card)
    (base / "original_checkpoint.json").unlink()
    card = hub.adapter_model_card(tmp_path / "adapter")
    assert card.data.base_model is None and str(tmp_path) not in str(card)
    assert hub.adapter_model_card(tmp_path / "adapter", "me/maetok").data.base_model == "me/maetok"
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        hub.adapter_model_card(tmp_path)


# --------------------------------------------------------------------------------------------------
# what a remote-code bundle carries

# .py files each push writes (tiny models; pipelines: root + component folders). Before a package's re-exports were
# followed to their modules: vitok 23, softvq 30, maetok 25, flowmo 30, v2flow 35; sit / dit / vitok_dit / v2flow /
# v2flow_llama pipelines 83 / 80 / 74 / 70 / 72.
# the counts of today's imports (utils/validation, the registry's family table for loading checks, and
# utils/allocator and utils/switches, which the fast linears import, included: each one file per model folder)
BUNDLE_BOUNDS = {"vitok": 21, "softvq": 26, "maetok": 25, "flowmo": 27, "sit": 58, "dit": 56, "vitok_dit": 62,
                 "v2flow": 61, "v2flow_llama": 63}  # fmt: skip
PACKAGES_OF_REEXPORTS = {"hf_vtok_modules.py", "hf_vtok_quantizers.py", "hf_vtok_flow.py", "hf_vtok_schedulers.py"}


@pytest.mark.parametrize("family", list(BUNDLE_BOUNDS))
def test_remote_code_bundles_carry_only_what_the_model_imports(family, tmp_path, monkeypatch):
    """A name imported from a package (``from ...modules import Attention``) brings its defining module only, not
    every module the package's ``__init__`` imports; converters, the registry's consumers and the CLI stay out."""
    pipelines = tiny_pipelines() if family in ("sit", "dit", "vitok_dit", "v2flow", "v2flow_llama") else {}
    obj = pipelines[family][0] if pipelines else tiny_tokenizer(family)
    fake = FakeHub(tmp_path, monkeypatch)
    obj.push_to_hub("me/bundle")
    files = list(fake.pushed.rglob("*.py"))
    names = {path.name for path in files}
    assert len(files) <= BUNDLE_BOUNDS[family], sorted(str(path.relative_to(fake.pushed)) for path in files)
    assert not names & PACKAGES_OF_REEXPORTS
    assert not any("convert" in name or "_hub_" in name or "commands" in name for name in names), sorted(names)
