"""The deterministic train/eval split: an example's side depends only on its prompt (and image), never on the batch.

An example goes to eval iff ``int(sha256(key)[:8], 16) / 2**32 < eval_fraction``, where ``key`` is the prompt (for
an example with an image: the prompt and the image reference, so the same question about different images is not one
example). The same prompt therefore lands on the same side in every batch, and a prompt held out once stays held out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Literal

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
    import numpy as np

    scores = np.fromiter((int(example_key(ex)[:8], 16) for ex in examples), dtype=np.uint64, count=len(examples))
    is_eval = settle_sides(scores, scores < eval_fraction * 2**32)
    return ["eval" if e else "train" for e in is_eval.tolist()]


def settle_sides(scores: Any, is_eval: Any) -> Any:
    """The tiny-batch rule of :func:`assign_sides` on arrays: ``scores`` are keys' first 32 bits (uint64; the order
    of :func:`eval_score`), ``is_eval`` each row's side by threshold. Every copy of the chosen prompt moves, so no
    prompt ends up on both sides."""
    import numpy as np

    if len(np.unique(scores)) < 2:
        return is_eval
    if not is_eval.any():
        return is_eval | (scores == scores.min())
    if is_eval.all():
        return is_eval & (scores != scores.max())
    return is_eval
