"""The deterministic train/eval split: an example's side depends only on its prompt (and image), never on the batch.

An example goes to eval iff ``int(sha256(key)[:8], 16) / 2**32 < eval_fraction``, where ``key`` is the prompt (for
an example with an image: the prompt and the image reference, so the same question about different images is not one
example). The same prompt therefore lands on the same side in every batch, and a prompt held out once stays held out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal

from skillgraft.data.spec import Example

Side = Literal["train", "eval"]


def example_key(example: Example) -> str:
    """The sha256 hex digest identifying an example's input (prompt, and image when there is one)."""
    text = example.prompt if example.image is None else f"{example.prompt}\x00image:{example.image}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def eval_score(key: str) -> float:
    """Where a key falls in [0, 1): keys below ``eval_fraction`` are held out."""
    return int(key[:8], 16) / 2**32


def assign_sides(examples: Sequence[Example], eval_fraction: float) -> list[Side]:
    """The side of each example, in order.

    Tiny batches: when no example falls below ``eval_fraction``, the lowest-scoring one is held out (so every batch
    has an eval part); when every example falls below it, the highest-scoring one is trained on. A batch with a
    single distinct prompt keeps one side empty.
    """
    scores = [eval_score(example_key(ex)) for ex in examples]
    sides: list[Side] = ["eval" if s < eval_fraction else "train" for s in scores]
    if len(set(scores)) >= 2:  # move every copy of the chosen prompt, so no prompt ends up on both sides
        if "eval" not in sides:
            lowest = min(scores)
            sides = ["eval" if s == lowest else side for s, side in zip(scores, sides)]
        elif "train" not in sides:
            highest = max(scores)
            sides = ["train" if s == highest else side for s, side in zip(scores, sides)]
    return sides
