"""The built-in demo: a tiny Llama-style model built from a seeded config, a tokenizer trained locally, and task data
generated here — so the whole loop runs on a laptop CPU with no network.

Old tasks (answers are letters): ``first``, ``last`` and ``max`` (the latest letter in the alphabet) of a sequence.
The base model is first taught these (the bootstrap that makes v1 the champion). New tasks have numeric answers, like
the counting task of Zhu et al. (arXiv 2510.08564) where full fine-tuning biases a model toward number tokens:
``count`` (how many letters) and then ``sum`` (the sum of two digits).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from pathlib import Path

from skillgraft.data import Example, TaskSpec

LETTERS = "abcdefghijklmnop"
DIGITS = "0123456789"
KEYWORDS = ("first", "last", "max", "count", "sum", ":", "+")
SPECIAL = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "unk": "<unk>"}

OLD_TASKS = ("first", "last", "max")
NEW_TASKS = ("count", "sum")
MODEL_NAME = "demo"
BASE_SOURCE = "builtin:demo-llama"


def _letters(rng: random.Random) -> list[str]:
    return [rng.choice(LETTERS) for _ in range(rng.randint(2, 6))]


def _first(rng: random.Random) -> Example:
    s = _letters(rng)
    return Example(prompt="first : " + " ".join(s), answer=s[0])


def _last(rng: random.Random) -> Example:
    s = _letters(rng)
    return Example(prompt="last : " + " ".join(s), answer=s[-1])


def _max(rng: random.Random) -> Example:
    s = _letters(rng)
    return Example(prompt="max : " + " ".join(s), answer=max(s))


def _count(rng: random.Random) -> Example:
    s = _letters(rng)
    return Example(prompt="count : " + " ".join(s), answer=str(len(s)))


def _sum(rng: random.Random) -> Example:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    return Example(prompt=f"sum : {a} + {b}", answer=" ".join(str(a + b)))


GENERATORS: dict[str, Callable[[random.Random], Example]] = {
    "first": _first,
    "last": _last,
    "max": _max,
    "count": _count,
    "sum": _sum,
}

SPECS: dict[str, TaskSpec] = {
    "first": TaskSpec(name="first", description="the first letter", answer_type="text", max_new_tokens=4),
    "last": TaskSpec(name="last", description="the last letter", answer_type="text", max_new_tokens=4),
    "max": TaskSpec(name="max", description="the latest letter in the alphabet", answer_type="text", max_new_tokens=4),
    "count": TaskSpec(name="count", description="how many letters", answer_type="number", max_new_tokens=4),
    "sum": TaskSpec(name="sum", description="sum of two digits, digit by digit", answer_type="text", max_new_tokens=4),
}


ROWS = 1200  # per old task (bootstrap)
NEW_ROWS = 600  # per new-task batch


def next_task(known: list[str], batches: dict[str, int]) -> tuple[str, int]:
    """The demo's next lesson: the first new task the champion doesn't know yet; then fresh batches of the last one."""
    for task in NEW_TASKS:
        if task not in known:
            return task, batches.get(task, 0)
    task = NEW_TASKS[-1]
    return task, batches.get(task, 0)


def known_prompts(intake, task: str) -> set[str]:
    """Every prompt of ``task`` already accepted into the store (train and eval splits)."""
    return {
        ex.prompt for b in intake.batches(task) for split in ("train", "eval") for ex in intake.load_split(b, split)
    }


def write_jsonl(path: Path, examples: list[Example]) -> Path:
    path.write_text("".join(ex.model_dump_json(exclude_none=True) + "\n" for ex in examples))
    return path


def generate(task: str, n: int, seed: int, exclude: Collection[str] = ()) -> list[Example]:
    """Up to ``n`` distinct examples of a demo task (deterministic for a seed), none with a prompt in ``exclude``.

    Pass the prompts a store already holds for the task so a new batch never leaks into an existing eval split.
    """
    if task not in GENERATORS:
        raise ValueError(f"unknown demo task {task!r}; demo tasks: {sorted(GENERATORS)}")
    rng = random.Random(f"{task}:{seed}")
    seen: set[str] = set(exclude)
    out: list[Example] = []
    for _ in range(n * 50):
        ex = GENERATORS[task](rng)
        if ex.prompt not in seen:
            seen.add(ex.prompt)
            out.append(ex)
            if len(out) == n:
                break
    return out


def vocabulary() -> list[str]:
    return [SPECIAL["pad"], SPECIAL["bos"], SPECIAL["eos"], SPECIAL["unk"], *LETTERS, *DIGITS, *KEYWORDS]


def build_tokenizer():
    """A word-level tokenizer trained locally with `tokenizers` on the demo vocabulary (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token=SPECIAL["unk"]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordLevelTrainer(special_tokens=vocabulary()[:4], min_frequency=1)
    corpus = [" ".join(vocabulary()[4:])] + [
        f"{ex.prompt} {ex.answer}" for task in GENERATORS for ex in generate(task, 50, seed=0)
    ]
    tok.train_from_iterator(corpus, trainer=trainer)
    bos = tok.token_to_id(SPECIAL["bos"])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SPECIAL['bos']} $A", special_tokens=[(SPECIAL["bos"], bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL["bos"],
        eos_token=SPECIAL["eos"],
        unk_token=SPECIAL["unk"],
        pad_token=SPECIAL["pad"],
        padding_side="left",
    )
    return fast


def build_model(tokenizer, seed: int = 0):
    """A tiny Llama-style causal LM (2 layers, hidden 64) from a config, weights from a fixed seed."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=96,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)
