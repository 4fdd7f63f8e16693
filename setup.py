"""hf_vtok: recent visual tokenizers as HuggingFace-native models."""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent

# torch is listed without an upper pin so that an installed CPU or CUDA build is kept;
# install torch first (see README) or pip resolves the default (CUDA) wheel.
CORE = [
    "torch>=2.4",
    "transformers>=5.0,<6",
    "diffusers>=0.35",
    "accelerate>=1.0",
    "safetensors>=0.4",
    "huggingface_hub>=1.0",
    "pillow>=10",
    "numpy>=1.26",
    "tqdm>=4.60",
    "torchdiffeq>=0.2.3",  # adaptive ODE solves (V2Flow CondOT)
]

EXTRAS = {
    # peft (>=0.15: trainable_token_indices): the LoRA tests; datasets: latent-cache tests; the evaluation tests
    # need the eval libraries (evaluate: the metric modules) and read real photographs from scikit-image's data
    # folder; scikit-learn: the digits and the classifier that scores the embedded default pipeline
    # (tests/commands/test_generate.py); tensorboard: the --report-to test of the training loop;
    # selenium: the browser test of the Spaces demo (with the demo extra and Debian's chromium + chromium-driver);
    # ruff: the style check of .ci/run (ruff.toml)
    "test": [
        "pytest>=8",
        "peft>=0.15",
        "torchmetrics>=1.4",
        "matplotlib>=3.8",
        "datasets>=3.0",
        "scikit-image>=0.22",
        "selenium>=4.20",
        "tensorboard>=2.14",
        "scikit-learn>=1.3",
        "evaluate>=0.4",
        "ruff==0.17.6",  # pinned: formatting differs between releases
    ],
    # training scripts (finetune_lora.py, train_v2flow_llama.py: peft); scikit-learn / scikit-image only for the
    # photos of make_default_model.py and the digits of make_default_generator.py;
    # tensorboard: `--report-to tensorboard` (wandb / trackio: install them to report there)
    "train": [
        "datasets>=3.0",
        "peft>=0.15",
        "torchmetrics>=1.4",
        "matplotlib>=3.8",
        "scikit-image>=0.22",
        "scikit-learn>=1.3",
        "tensorboard>=2.14",
    ],
    "eval": ["torchmetrics>=1.4", "matplotlib>=3.8", "datasets>=3.0", "evaluate>=0.4"],
    # gradio caps pillow below 13 (installing it downgrades a newer pillow; hf_vtok works with either)
    "demo": ["gradio>=5", "torchmetrics>=1.4"],
}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})

setup(
    name="hf_vtok",
    version="0.1.0",
    description="Recent visual tokenizers (ViTok-v2, FlowMo, MAETok, SoftVQ-VAE, V2Flow) as HuggingFace-native models",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # the model card templates live in the top-level model_cards/ and ship as hf_vtok/model_cards (hf_vtok.hub)
    package_dir={"": "src", "hf_vtok.model_cards": "model_cards"},
    packages=find_packages("src") + ["hf_vtok.model_cards"],
    # the embedded default model of `hf-vtok reconstruct` (a small ViTok, training_scripts/make_default_model.py),
    # the default pipeline of `hf-vtok generate` (a digits SiT, training_scripts/make_default_generator.py) and the
    # `evaluate` module scripts (hf_vtok.metrics.evaluate_module_path: folders without __init__.py)
    package_data={
        "hf_vtok": [
            "default_model/*.json",
            "default_model/*.safetensors",
            "default_pipeline/*.json",
            "default_pipeline/*.png",
            "default_pipeline/*/*.json",
            "default_pipeline/*/*.safetensors",
            "metrics/evaluate_modules/*/*.py",
        ],
        "hf_vtok.model_cards": ["*.md"],
    },
    include_package_data=True,
    install_requires=CORE,
    extras_require=EXTRAS,
    # the console script parses before `import hf_vtok` (torch, transformers): src/hf_vtok_cli.py
    py_modules=["hf_vtok_cli"],
    entry_points={"console_scripts": ["hf-vtok=hf_vtok_cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
