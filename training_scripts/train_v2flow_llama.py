"""Train a causal language model (LLaMA first) to generate V²Flow image tokens after a prompt, with accelerate.

    hf-vtok cache-latents --model runs/v2flow-pipeline --images imagenet/train --output cache/v2flow-ids \\
        --resolution 512 --flip                        # a V2FlowPipeline folder: the cache holds image_tokens
    accelerate launch training_scripts/train_v2flow_llama.py --language-model meta-llama/Llama-2-7b-hf \\
        --image-pipeline runs/v2flow-pipeline --tokens cache/v2flow-ids --conditioning class \\
        --lora-rank 64 --output-dir runs/v2flow-llama

Each example is ``[BOS] prompt <begin_of_image> image tokens <end_of_image>`` right-padded to a fixed length;
the loss is the language model's next-token cross-entropy on the image tokens only (prompt, begin / end of
image and padding are ignored). Prompts: ``--conditioning class`` uses the cache's class names (image folder
sub-folders), ``--conditioning text`` a ``--captions`` JSON file mapping the cache's keys to captions. With
``--prompt-dropout p`` a prompt is replaced by the empty one with probability ``p``, which trains the
unconditional stream of classifier-free guidance. A cache made with ``--flip`` gives the flipped image's
tokens half of the time.

If the language model's tokenizer lacks the V²Flow tokens, they are added with ``extend_vocabulary`` (rows
initialised from the codebook of the ``--image-pipeline``'s V²Flow tokenizer). ``--lora-rank r`` trains LoRA
adapters (peft) on the attention and MLP projections plus the new token rows only
(``trainable_token_indices``); without it every weight trains. The loop is ``hf_vtok.training.Trainer``
(DDP under ``accelerate launch``, resumable checkpoints, loss curves).

Output: ``<output-dir>/language_model`` (the trained causal LM and its tokenizer, ``from_pretrained``-ready;
LoRA: merged), ``language_model_ema`` with ``--ema-decay``, ``adapter`` with LoRA (the peft adapter), and with
``--image-pipeline`` the whole ``V2FlowLlamaPipeline`` in ``<output-dir>/pipeline`` (the EMA weights if any).
"""

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset

from hf_vtok.data import load_latent_cache
from hf_vtok.data.datasets import draw_generator
from hf_vtok.pipelines.v2flow.language_model import (
    BEGIN_OF_IMAGE_TOKEN,
    IMAGE_TOKEN_TEMPLATE,
    V2FlowVocabulary,
    extend_vocabulary,
    image_sequence,
)
from hf_vtok.training import Trainer, add_training_arguments, build_optimizer, build_scheduler, parse_with_config
from hf_vtok.utils.errors import ArgumentParser, run_script

LANGUAGE_MODEL_FOLDER = "language_model"
ADAPTER_FOLDER = "adapter"
PIPELINE_FOLDER = "pipeline"
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("models")
    model.add_argument("--language-model", required=True, help="transformers causal LM folder or Hub id (+ tokenizer)")
    model.add_argument(
        "--image-pipeline",
        help="V2FlowPipeline folder (DC-AE + V2Flow): extends the vocabulary if needed, and makes <output>/pipeline",
    )
    model.add_argument("--lora-rank", type=int, default=0, help="0: train every weight")
    model.add_argument("--lora-alpha", type=float, default=None, help="LoRA scale numerator (default: the rank)")
    model.add_argument("--lora-dropout", type=float, default=0.0)
    model.add_argument("--lora-target-modules", nargs="+", default=list(LORA_TARGETS))
    data = parser.add_argument_group("data")
    data.add_argument("--tokens", required=True, help="`hf-vtok cache-latents` folder made with a V2FlowPipeline")
    data.add_argument("--conditioning", choices=["class", "text"], default="class")
    data.add_argument("--captions", help="JSON file {cache key: caption} (--conditioning text)")
    data.add_argument("--prompt-dropout", type=float, default=0.1, help="probability of the empty prompt (for CFG)")
    data.add_argument("--max-prompt-tokens", type=int, default=32)
    optim = parser.add_argument_group("optimizer")
    optim.add_argument("--lr", type=float, default=1e-4)
    optim.add_argument("--min-lr", type=float, default=1e-5)
    optim.add_argument("--warmup-steps", type=int, default=0)
    optim.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.95))
    optim.add_argument("--weight-decay", type=float, default=0.0, help="AdamW decay on weight matrices only")
    add_training_arguments(parser, max_steps=10_000, batch_size=8, ema_decay=0.0, checkpoint_every=1000)
    return parser


class ImageTokenSequences(Dataset):
    """``dataset[(position, index)]`` -> ``input_ids``, ``attention_mask``, ``labels`` of one cached image."""

    def __init__(self, rows, prompts: list[str], text_tokenizer, vocabulary, args):
        self.rows, self.prompts, self.text_tokenizer, self.vocabulary = rows, prompts, text_tokenizer, vocabulary
        self.seed, self.prompt_dropout, self.max_prompt_tokens = args.seed, args.prompt_dropout, args.max_prompt_tokens
        self.has_flip = "image_tokens_flip" in rows.column_names
        num_tokens = len(rows[0]["image_tokens"])
        bos = 1 if text_tokenizer.bos_token_id is not None else 0
        self.length = bos + args.max_prompt_tokens + 1 + num_tokens + 1

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, draw):
        position, index = draw
        row = self.rows[index]
        rng = draw_generator(self.seed, position)
        image_tokens = row["image_tokens_flip"] if self.has_flip and rng.random() < 0.5 else row["image_tokens"]
        prompt = "" if rng.random() < self.prompt_dropout else self.prompts[index]
        return image_sequence(
            self.text_tokenizer, prompt, image_tokens, self.vocabulary, self.length, self.max_prompt_tokens
        )


def prompts_for(rows, args) -> list[str]:
    """One prompt per cached image: its class name, or its caption."""
    keys = rows["key"]
    if args.conditioning == "text":
        if not args.captions:
            raise ValueError("--conditioning text needs --captions (a JSON file {cache key: caption})")
        captions = json.loads(Path(args.captions).read_text())
        missing = [key for key in keys if key not in captions]
        if missing:
            raise ValueError(f"{args.captions} has no caption for {len(missing)} cached images, e.g. {missing[0]!r}")
        return [captions[key] for key in keys]
    names = rows.cache_info.get("class_names") or []
    labels = rows.data.column("label").to_pylist()
    if not names or min(labels) < 0:
        raise ValueError(
            f"the cache {args.tokens} has no class labels (make it from an image folder with class sub-folders), "
            "or use --conditioning text"
        )
    return [names[label].replace("_", " ") for label in labels]


def load_models(args):
    """The language model and its tokenizer with the V²Flow vocabulary, the layout, and the V²Flow components."""
    from diffusers import AutoencoderDC
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    import hf_vtok  # noqa: F401  (registers V2FlowModel)

    language_model = AutoModelForCausalLM.from_pretrained(args.language_model, dtype=torch.float32)
    text_tokenizer = AutoTokenizer.from_pretrained(args.language_model)
    vae = image_tokenizer = None
    if args.image_pipeline:
        vae = AutoencoderDC.from_pretrained(args.image_pipeline, subfolder="vae")
        image_tokenizer = AutoModel.from_pretrained(args.image_pipeline, subfolder="tokenizer").eval()
    if BEGIN_OF_IMAGE_TOKEN in text_tokenizer.get_vocab():  # extended before (e.g. a previous run's output)
        if image_tokenizer is not None:
            codebook_size = image_tokenizer.config.codebook_size
        else:  # every V2Flow token shares the prefix; two are begin / end of image
            prefix = IMAGE_TOKEN_TEMPLATE.split("{")[0]
            codebook_size = sum(name.startswith(prefix) for name in text_tokenizer.get_vocab()) - 2
        vocabulary = V2FlowVocabulary.from_tokenizer(text_tokenizer, codebook_size)
    elif image_tokenizer is not None:
        vocabulary = extend_vocabulary(language_model, text_tokenizer, image_tokenizer)
    else:
        raise ValueError(
            f"the tokenizer of {args.language_model} has no V2Flow tokens: pass --image-pipeline to add them"
        )
    return language_model, text_tokenizer, vocabulary, vae, image_tokenizer


def with_lora(language_model, vocabulary: V2FlowVocabulary, args):
    """LoRA adapters on the projections; the new token rows train too (the rest of the embeddings stays)."""
    from peft import LoraConfig, get_peft_model

    new_rows = vocabulary.added_token_ids
    token_rows = {"embed_tokens": new_rows}
    if not language_model.config.tie_word_embeddings and language_model.get_output_embeddings() is not None:
        token_rows["lm_head"] = new_rows
    config = LoraConfig(
        r=args.lora_rank,
        lora_alpha=args.lora_alpha if args.lora_alpha is not None else args.lora_rank,
        lora_dropout=args.lora_dropout,
        target_modules=args.lora_target_modules,
        trainable_token_indices=token_rows,
    )
    return get_peft_model(language_model, config)


def main(argv=None) -> Path:
    args = parse_with_config(build_parser(), argv)
    if not 0 <= args.prompt_dropout <= 1:
        raise ValueError(f"--prompt-dropout must be in [0, 1], got {args.prompt_dropout}")
    trainer = Trainer(args)
    rows = load_latent_cache(args.tokens)
    if "image_tokens" not in rows.column_names:
        raise ValueError(
            f"{args.tokens} holds latents, not V2Flow token ids: make the cache with `hf-vtok cache-latents --model "
            "<V2FlowPipeline folder>`"
        )
    language_model, text_tokenizer, vocabulary, vae, image_tokenizer = load_models(args)
    dataset = ImageTokenSequences(rows, prompts_for(rows, args), text_tokenizer, vocabulary, args)
    cached_tokens = len(rows[0]["image_tokens"])
    if image_tokenizer is not None and cached_tokens != image_tokenizer.config.num_tokens:
        raise ValueError(
            f"the cache holds {cached_tokens} tokens per image but the V2Flow tokenizer of {args.image_pipeline} "
            f"makes {image_tokenizer.config.num_tokens}"
        )
    lora = args.lora_rank > 0
    if lora and args.ema_decay > 0:
        raise ValueError("--ema-decay applies to full fine-tuning; LoRA runs keep no EMA (pass --ema-decay 0)")
    if lora and args.gradient_checkpointing:  # (full fine-tuning: Trainer.add_model enables it)
        language_model.activation_checkpointing_enable({"use_reentrant": False})
    model = with_lora(language_model, vocabulary, args) if lora else language_model
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = build_optimizer(model, "adamw", args.lr, args.betas, args.weight_decay)
    scheduler = build_scheduler(optimizer, args.max_steps, args.warmup_steps, args.min_lr, 0.0)
    model, optimizer, scheduler = trainer.prepare(model, optimizer, scheduler)
    if not lora:  # saved by the trainer as <output>/language_model (and language_model_ema), with the tokenizer
        trainer.add_model(LANGUAGE_MODEL_FOLDER, model, save_extra=text_tokenizer.save_pretrained)
    trainer.print(f"{sum(p.numel() for p in trainable)} trainable parameters, sequences of {dataset.length} tokens")

    def train_step(batch, step):
        with trainer.accelerator.autocast():
            loss = model(**batch).loss
        return {"image_token_loss": loss.detach(), **trainer.optimizer_step(loss, optimizer, scheduler, trainable)}

    output = trainer.fit(train_step, dataset)
    accelerator = trainer.accelerator
    if accelerator.is_main_process:
        if lora:
            adapted = accelerator.unwrap_model(model).eval()
            adapted.save_pretrained(output / ADAPTER_FOLDER)
            copy.deepcopy(adapted).merge_and_unload().save_pretrained(output / LANGUAGE_MODEL_FOLDER)
            text_tokenizer.save_pretrained(output / LANGUAGE_MODEL_FOLDER)
        if image_tokenizer is not None:
            from transformers import AutoModelForCausalLM

            from hf_vtok import V2FlowLlamaPipeline

            averaged = output / f"{LANGUAGE_MODEL_FOLDER}_ema"  # the EMA weights generate, when there are some
            trained = AutoModelForCausalLM.from_pretrained(
                averaged if averaged.is_dir() else output / LANGUAGE_MODEL_FOLDER
            )
            pipeline = V2FlowLlamaPipeline(
                vae=vae, tokenizer=image_tokenizer, language_model=trained.eval(), text_tokenizer=text_tokenizer
            )
            pipeline.save_pretrained(output / PIPELINE_FOLDER)
    accelerator.wait_for_everyone()
    return output


if __name__ == "__main__":
    sys.exit(run_script(main, Path(__file__).name))
