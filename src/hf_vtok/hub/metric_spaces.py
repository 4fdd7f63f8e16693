"""hf_vtok's ``evaluate`` modules as metric Spaces on the Hub, so that ``evaluate.load("me/psnr")`` finds them.

    from hf_vtok.hub import push_metric_spaces
    push_metric_spaces(["psnr", "ssim", "rfid"], "me")     # Spaces me/psnr, me/ssim, me/rfid

A metric Space holds the module script named after the repo (``evaluate`` loads ``<repo name>.py``), a README
whose front matter tags it ``evaluate`` / ``metric``, a Gradio ``app.py`` (a pair of images -> the score, for the
per-image metrics) and a ``requirements.txt`` installing hf_vtok, which the script imports.
"""

from __future__ import annotations

import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .cards import INSTALL_COMMAND

# the metrics of one image pair, which the Space's app computes from two uploads
PAIRED_METRICS = ("psnr", "ssim", "lpips")
SPACE_REQUIREMENTS = ("evaluate>=0.4", "torchmetrics>=1.4", "datasets>=3.0")
TITLES = {
    "psnr": "PSNR",
    "ssim": "SSIM",
    "lpips": "LPIPS",
    "rfid": "rFID",
    "fdd": "FDD",
    "gfid": "gFID",
    "inception_score": "Inception Score",
}

_APP = '''"""The metric Space of hf_vtok's `{name}` evaluate module (its script: {script})."""

from pathlib import Path

import evaluate
import gradio as gr

module = evaluate.load(str(Path(__file__).with_name("{script}")))
PAIRED = {paired}


def compute(prediction, reference) -> dict:
    """Two RGB images of one size (uint8 [H, W, 3]) -> ``{{"{name}": score}}``."""
    if prediction is None or reference is None:
        raise gr.Error("upload a reconstruction and its original")
    return module.compute(predictions=[prediction], references=[reference])


with gr.Blocks(title="{title}") as demo:
    gr.Markdown(Path(__file__).with_name("README.md").read_text(encoding="utf-8").split("---", 2)[-1])
    if PAIRED:
        with gr.Row():
            prediction = gr.Image(label="reconstruction", type="numpy", image_mode="RGB")
            reference = gr.Image(label="original (same size)", type="numpy", image_mode="RGB")
        score = gr.JSON(label="{title}")
        gr.Button("Compute").click(compute, [prediction, reference], score)

if __name__ == "__main__":
    demo.launch()
'''

_README = """---
title: {title}
emoji: 📏
colorFrom: indigo
colorTo: gray
sdk: gradio
sdk_version: {gradio_version}
app_file: app.py
pinned: false
license: apache-2.0
short_description: hf_vtok's {title} as an evaluate module
tags:
- evaluate
- metric
- hf_vtok
description: >-
  {description}
---

# {title}

{description}

hf_vtok's `{name}` metric (`hf_vtok.metrics.evaluate_metrics`), as an `evaluate` module.

## Usage

```bash
{install}
```

```python
import evaluate

metric = evaluate.load("{repo_id}")
{usage}
```

Inputs:
{inputs}

Offline, with hf_vtok installed: `evaluate.load(hf_vtok.metrics.evaluate_module_path("{name}"))`.

## Citation

```bibtex
{citation}
```
"""

_USAGE = {
    "paired": 'results = metric.compute(predictions=reconstructions, references=originals)  # {"%s": ...}',
    "frechet": 'results = metric.compute(predictions=reconstructions, references=originals)  # {"%s": ...}, 2+ images',
    "gfid": 'results = metric.compute(predictions=samples, reference="VIRTUAL_imagenet256_labeled.npz")  # {"gfid"}',
    "inception_score": 'results = metric.compute(predictions=samples, splits=10)  # {"is": ..., "is_std": ...}',
}


def _gradio_version() -> str:
    try:
        return version("gradio")
    except PackageNotFoundError:  # the Space installs it; any release with gr.Blocks does
        return "5.0.0"


def metric_space_folder(name: str, folder, repo_id: str, *, requirement: str = "hf_vtok") -> Path:
    """Write the files of the metric Space ``repo_id`` of hf_vtok's ``evaluate`` module ``name`` into ``folder``
    (the script, README.md, app.py, requirements.txt); ``requirement`` is the line that installs hf_vtok there
    (a PyPI name, a git URL, or a wheel's URL). Returns the folder."""
    import evaluate

    from ..metrics import evaluate_module_path

    script_path = Path(evaluate_module_path(name)) / f"{name}.py"  # name checked by evaluate_module_path
    if "/" not in repo_id:
        raise ValueError(f"repo_id must be 'owner/name', got {repo_id!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    script = f"{repo_id.split('/')[-1]}.py"  # evaluate.load(repo_id) reads the script named after the repo
    (folder / script).write_text(script_path.read_text(encoding="utf-8"), encoding="utf-8")
    with tempfile.TemporaryDirectory() as cache:
        info = evaluate.load(str(script_path.parent), cache_dir=cache).info
    kind = "paired" if name in PAIRED_METRICS else "frechet" if name in ("rfid", "fdd") else name
    usage = _USAGE[kind].replace("%s", name)
    description = " ".join(info.description.split())
    values = {
        "name": name,
        "title": TITLES[name],
        "repo_id": repo_id,
        "description": description,
        "inputs": info.inputs_description.rstrip(),
        "usage": usage,
        "citation": info.citation,
        "install": INSTALL_COMMAND if requirement == "hf_vtok" else f"pip install {requirement!r}",
        "gradio_version": _gradio_version(),
    }
    (folder / "README.md").write_text(_README.format(**values), encoding="utf-8")
    app = _APP.format(name=name, script=script, title=TITLES[name], paired=name in PAIRED_METRICS)
    (folder / "app.py").write_text(app, encoding="utf-8")
    (folder / "requirements.txt").write_text("\n".join((requirement, *SPACE_REQUIREMENTS)) + "\n", encoding="utf-8")
    return folder


def push_metric_space(
    name: str,
    repo_id: str,
    *,
    requirement: str = "hf_vtok",
    token: str | bool | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
):
    """Create (or update) the Gradio Space ``repo_id`` holding hf_vtok's ``evaluate`` module ``name``
    (``metric_space_folder``) in one commit; returns the commit info of ``HfApi.upload_folder``."""
    from huggingface_hub import HfApi

    from ..metrics import evaluate_module_path

    evaluate_module_path(name)  # an unknown name fails before a repo is created
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as folder:
        metric_space_folder(name, folder, repo_id, requirement=requirement)
        return api.upload_folder(
            repo_id=repo_id,
            repo_type="space",
            folder_path=folder,
            commit_message=commit_message or f"Upload hf_vtok's {TITLES[name]} evaluate module",
        )


def push_metric_spaces(names=None, namespace: str = "", **kwargs) -> dict:
    """``push_metric_space`` of each of ``names`` (default: all of ``hf_vtok.metrics.EVALUATE_MODULES``) to
    ``<namespace>/<name>``; returns ``{name: commit info}``."""
    from ..metrics import EVALUATE_MODULES

    if not namespace or "/" in namespace:
        raise ValueError(f"namespace must be a Hub user or organisation name, got {namespace!r}")
    names = EVALUATE_MODULES if names is None else names
    return {name: push_metric_space(name, f"{namespace}/{name}", **kwargs) for name in names}


__all__ = ["PAIRED_METRICS", "metric_space_folder", "push_metric_space", "push_metric_spaces"]
