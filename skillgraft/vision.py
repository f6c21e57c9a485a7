"""Image + prompt examples for vision-language models: the model's processor turns them into model inputs.

A task's examples may carry an image (``Example.image``, a reference resolved by the intake); steps load the image
and hand the fine-tune and the regression suite :class:`ImageExample` objects. The model's own processor (loaded with
it, ``LoadedModel.tokenizer`` for a VLM) makes the pixel inputs and expands the image placeholder into as many image
tokens as the image yields, so training and evaluation see exactly what the model was built for.

The prompt is given raw, like text tasks: the image placeholder goes in front of it in the model's own form
(:func:`image_prompt`): ``<image>\\n`` + prompt for LLaVA, ``<|vision_start|><|image_pad|><|vision_end|>`` + prompt
for Qwen2-VL / Qwen2.5-VL.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["NOT_PER_TOKEN", "ImageExample", "VisionError", "batch_inputs", "encode_image_example", "image_prompt",
           "is_processor", "left_padding", "require_processor", "text_tokenizer"]  # fmt: skip

_IMAGE_PROMPT = {
    "qwen2_vl": "<|vision_start|>{image}<|vision_end|>{prompt}",
    "qwen2_5_vl": "<|vision_start|>{image}<|vision_end|>{prompt}",
}
_DEFAULT_IMAGE_PROMPT = "{image}\n{prompt}"
NOT_PER_TOKEN = frozenset({"image_grid_thw", "video_grid_thw", "image_sizes"})


@dataclass(frozen=True)
class ImageExample:
    """A prompt about one image and its expected answer.

    ``image`` is a ``PIL.Image.Image``, or the image file's bytes (decoded only when the processor needs the pixels:
    a training set holds its images compressed, not as tensors).
    """

    prompt: str
    answer: str
    image: Any
    ref: str = ""

    def pixels(self) -> Any:
        """The image as an RGB ``PIL.Image.Image``."""
        if isinstance(self.image, (bytes, bytearray)):
            from skillgraft.data.images import decode

            return decode(bytes(self.image))
        return self.image.convert("RGB") if getattr(self.image, "mode", "RGB") != "RGB" else self.image


class VisionError(ValueError):
    """Image examples given to a model or tokenizer that cannot take images."""


def is_processor(obj: Any) -> bool:
    """True for a multimodal processor (it has a tokenizer and an image processor), False for a plain tokenizer."""
    return hasattr(obj, "tokenizer") and hasattr(obj, "image_processor")


def text_tokenizer(obj: Any) -> Any:
    """The text tokenizer of a processor, or ``obj`` itself when it is a tokenizer."""
    return obj.tokenizer if is_processor(obj) else obj


def image_prompt(processor: Any, model_type: str, prompt: str) -> str:
    """``prompt`` with the model's image placeholder in front, as its processor expects it (one image)."""
    token = getattr(processor, "image_token", None)
    if not token:
        raise VisionError(f"the {type(processor).__name__} of this {model_type} model names no image token")
    return _IMAGE_PROMPT.get(model_type, _DEFAULT_IMAGE_PROMPT).format(image=token, prompt=prompt)


def require_processor(tokenizer: Any, model_type: str, examples: Sequence) -> None:
    if any(isinstance(ex, ImageExample) for ex in examples) and not is_processor(tokenizer):
        raise VisionError(
            f"examples carry images but this {model_type} model came with a text tokenizer "
            f"({type(tokenizer).__name__}), not an image processor: image tasks need a vision-language model "
            "(LLaVA, Qwen2-VL, ...) loaded with its processor"
        )


def encode_image_example(processor: Any, model_type: str, ex: ImageExample) -> dict[str, Any]:
    """The processor's output for one example's prompt and image, split for :class:`~skillgraft.train.MultimodalExample`:
    ``prompt`` (the text with the placeholder), ``prompt_ids``, ``inputs`` (pixel tensors, one image's worth, batched
    along dim 0) and ``token_inputs`` (per-prompt-token integer inputs such as Qwen2-VL's ``mm_token_type_ids``)."""
    text = image_prompt(processor, model_type, ex.prompt)
    enc = processor(text=[text], images=[ex.pixels()], return_tensors="pt")
    ids = enc["input_ids"][0].tolist()
    inputs: dict[str, torch.Tensor] = {}
    token_inputs: dict[str, list[int]] = {}
    for key, value in enc.items():
        if key in ("input_ids", "attention_mask") or not isinstance(value, torch.Tensor):
            continue
        per_token = (value.ndim == 2 and tuple(value.shape) == (1, len(ids)) and not value.is_floating_point()
                     and key not in NOT_PER_TOKEN)  # fmt: skip
        if per_token:
            token_inputs[key] = value[0].tolist()
        else:
            inputs[key] = value
    return {"prompt": text, "prompt_ids": ids, "inputs": inputs, "token_inputs": token_inputs}


@contextmanager
def left_padding(tokenizer: Any) -> Iterator[None]:
    """Pad on the left while inside (generation continues where each prompt ends); the tokenizer's side is restored."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        yield
    finally:
        tokenizer.padding_side = side


def batch_inputs(tokenizer: Any, model_type: str, items: Sequence, device: torch.device) -> dict:
    """Left-padded model inputs for one batch for generation: text prompts through the (text) tokenizer, or
    :class:`ImageExample` objects through the processor (``tokenizer`` is then the model's processor)."""
    tok = text_tokenizer(tokenizer)
    with left_padding(tok):
        if items and isinstance(items[0], ImageExample):
            enc = tokenizer(text=[image_prompt(tokenizer, model_type, ex.prompt) for ex in items],
                            images=[ex.pixels() for ex in items], return_tensors="pt", padding=True)  # fmt: skip
        else:
            enc = tok(list(items), return_tensors="pt", padding=True)
    return {k: v.to(device) for k, v in enc.items() if isinstance(v, torch.Tensor)}
