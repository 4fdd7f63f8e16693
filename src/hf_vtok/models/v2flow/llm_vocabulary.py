"""Extract an LLM's input-embedding matrix (``embed_tokens``) for V²Flow's visual vocabulary resampler.

    hf-vtok cache-llm-vocabulary --llm path/to/Llama-2-7b-hf --output llama2_vocabulary.safetensors

Reads the (possibly sharded) safetensors checkpoint of the LLM tensor by tensor with ``safe_open``
(only the embedding matrix is loaded) and writes it, in its stored dtype, to a safetensors file
with the single key ``embed_tokens``. The original's ``.pth`` file (``torch.save`` of the bare
tensor) is accepted wherever a vocabulary file is read, and loaded without executing pickle.
"""

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ...utils.checkpoints import load_torch_checkpoint

VOCABULARY_KEY = "embed_tokens"
SHARD_INDEX = "model.safetensors.index.json"


def _safetensors_files(llm_path: Path) -> list[Path]:
    if llm_path.is_file():
        return [llm_path]
    if not llm_path.is_dir():
        raise FileNotFoundError(f"LLM checkpoint {str(llm_path)!r} does not exist")
    files = sorted(llm_path.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{str(llm_path)!r} holds no *.safetensors files (a transformers LLM folder is expected)")
    return files


def find_embed_tokens_key(llm_path: str | os.PathLike, key: str | None = None) -> tuple[Path, str]:
    """The shard and name of the LLM's ``embed_tokens`` tensor (or of ``key``).

    Uses ``model.safetensors.index.json`` when present; otherwise scans the shards' headers. Several
    tensors whose name contains ``embed_tokens`` (e.g. a vision tower's) are an error naming them:
    pass ``key`` to choose.
    """
    llm_path = Path(llm_path)
    index_file = llm_path / SHARD_INDEX if llm_path.is_dir() else None
    if index_file is not None and index_file.is_file():
        weight_map = json.loads(index_file.read_text())["weight_map"]
        locations = {name: llm_path / shard for name, shard in weight_map.items()}
    else:
        locations = {}
        for file in _safetensors_files(llm_path):
            try:
                with safe_open(str(file), framework="pt") as handle:
                    locations.update(dict.fromkeys(handle.keys(), file))
            except Exception as error:  # safetensors raises its own error types
                raise ValueError(f"{str(file)!r} is not a readable safetensors file: {error}") from error
    if key is not None:
        if key not in locations:
            raise KeyError(f"{str(llm_path)!r} has no tensor {key!r}")
        return locations[key], key
    candidates = sorted(name for name in locations if VOCABULARY_KEY in name)
    if not candidates:
        raise KeyError(f"{str(llm_path)!r} has no tensor whose name contains {VOCABULARY_KEY!r}")
    if len(candidates) > 1:
        raise ValueError(f"{str(llm_path)!r} has several {VOCABULARY_KEY} tensors {candidates}; choose one with key=")
    return locations[candidates[0]], candidates[0]


def extract_llm_vocabulary(llm_path: str | os.PathLike, key: str | None = None) -> torch.Tensor:
    """The ``[V, D]`` input-embedding matrix of an LLM checkpoint (folder, sharded folder or one file)."""
    file, name = find_embed_tokens_key(llm_path, key)
    with safe_open(str(file), framework="pt") as handle:
        vocabulary = handle.get_tensor(name)
    if vocabulary.dim() != 2:
        raise ValueError(f"{name!r} in {str(file)!r} has shape {tuple(vocabulary.shape)}, not [vocabulary, width]")
    return vocabulary


def save_llm_vocabulary(vocabulary: torch.Tensor, output: str | os.PathLike, source: str | None = None) -> Path:
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"source": str(source)} if source else None
    save_file({VOCABULARY_KEY: vocabulary.contiguous()}, str(output), metadata=metadata)
    return output


def load_llm_vocabulary(path: str | os.PathLike) -> torch.Tensor:
    """A vocabulary file: this module's safetensors, any safetensors with one 2-D tensor, or the
    original's ``.pth`` bare tensor (loaded with ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vocabulary file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as handle:
                names = list(handle.keys())
                name = VOCABULARY_KEY if VOCABULARY_KEY in names else (names[0] if len(names) == 1 else None)
                if name is None:
                    raise ValueError(
                        f"{str(path)!r} holds {len(names)} tensors and none is named {VOCABULARY_KEY!r}; "
                        "write it with `hf-vtok cache-llm-vocabulary`"
                    )
                vocabulary = handle.get_tensor(name)
        except ValueError:
            raise
        except Exception as error:
            raise ValueError(f"{str(path)!r} is not a readable safetensors file: {error}") from error
    else:
        vocabulary = load_torch_checkpoint(path)
        if isinstance(vocabulary, dict):
            tensors = [value for value in vocabulary.values() if isinstance(value, torch.Tensor)]
            if len(tensors) != 1:
                raise ValueError(
                    f"{str(path)!r} is a dict of {len(tensors)} tensors; expected the bare embed_tokens tensor"
                )
            vocabulary = tensors[0]
    if not isinstance(vocabulary, torch.Tensor) or vocabulary.dim() != 2:
        shape = tuple(vocabulary.shape) if isinstance(vocabulary, torch.Tensor) else type(vocabulary).__name__
        raise ValueError(f"{str(path)!r} does not hold a [vocabulary, width] matrix (got {shape})")
    return vocabulary
