"""A tiny LLaVA-style vision-language model saved as a Hugging Face directory with its processor (CLIP image
processor + a word-level tokenizer), and an image task to teach it: name the colour of a picture. Built from configs
and seeds, no download."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import transformers as tf
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers, processors

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 40, 230)}
SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
WORDS = ["what", "colour", "is", "this", "picture", "?", "say", ":", *COLOURS, *"abcdefgh", *"0123456789"]
SIDE = 28  # pixels: 2×2 patches of 14, so 4 image tokens


def build_processor() -> tf.LlavaProcessor:
    vocab = {token: i for i, token in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                      pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})  # fmt: skip
    images = tf.CLIPImageProcessorPil(size={"shortest_edge": SIDE}, crop_size={"height": SIDE, "width": SIDE})
    return tf.LlavaProcessor(image_processor=images, tokenizer=fast, patch_size=14,
                             vision_feature_select_strategy="default", num_additional_image_tokens=1)  # fmt: skip


def build_model(processor: tf.LlavaProcessor, seed: int = 0) -> tf.LlavaForConditionalGeneration:
    tok = processor.tokenizer
    torch.manual_seed(seed)
    text = tf.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                          eos_token_id=tok.eos_token_id)  # fmt: skip
    vision = tf.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                 image_size=SIDE, patch_size=14, projection_dim=32)  # fmt: skip
    config = tf.LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                            vision_feature_select_strategy="default")  # fmt: skip
    model = tf.LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    return model.eval()


def save_llava(path: Path, seed: int = 0) -> Path:
    processor = build_processor()
    model = build_model(processor, seed)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def picture(colour: str, rng: np.random.Generator) -> Image.Image:
    base = np.array(COLOURS[colour], dtype=np.float64)
    pixels = np.clip(base + rng.normal(0, 25, size=(SIDE, SIDE, 3)), 0, 255).astype("uint8")
    return Image.fromarray(pixels, "RGB")


def write_colour_task(folder: Path, rows: int, seed: int = 0, prompt: str = "what colour is this picture ?") -> Path:
    """``folder/colours.jsonl`` and ``folder/imgs/NNNN.png``: every row asks the same question of its own picture."""
    rng = np.random.default_rng(seed)
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(rows):
        colour = list(COLOURS)[i % len(COLOURS)]
        name = f"imgs/{seed:02d}{i:04d}.png"
        picture(colour, rng).save(folder / name)
        lines.append(json.dumps({"prompt": prompt, "image": name, "answer": colour}))
    data = folder / "colours.jsonl"
    data.write_text("\n".join(lines) + "\n")
    return data


COLOUR_SPEC = {"name": "colour", "description": "the colour of a picture", "answer_type": "label",
               "labels": list(COLOURS), "max_new_tokens": 2, "min_rows": 8}  # fmt: skip
