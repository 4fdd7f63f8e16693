"""``hf-vtok cache-llm-vocabulary``: an LLM's ``embed_tokens`` matrix as one safetensors file, V²Flow's visual
vocabulary (``hf_vtok.models.v2flow.llm_vocabulary``).

    hf-vtok cache-llm-vocabulary --llm Llama-2-7b-hf --output llama2_vocabulary.safetensors
"""

import argparse
from pathlib import Path

from ..models.v2flow.llm_vocabulary import extract_llm_vocabulary, save_llm_vocabulary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--llm", required=True, help="LLM folder (sharded safetensors) or one .safetensors file")
    parser.add_argument("--output", required=True, help="vocabulary file to write (.safetensors)")
    parser.add_argument("--key", help="tensor name if the checkpoint has several *embed_tokens* tensors")


def run(args: argparse.Namespace) -> Path:
    vocabulary = extract_llm_vocabulary(args.llm, args.key)
    output = save_llm_vocabulary(vocabulary, args.output, source=args.llm)
    print(f"wrote the {tuple(vocabulary.shape)} {vocabulary.dtype} vocabulary of {args.llm} to {output}")
    return output
