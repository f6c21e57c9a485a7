"""The fine-tune loop: seeded and repeatable, loss on answer tokens only, only the recipe's tensors move."""

import pytest
import torch

from skillgraft import demo
from skillgraft.recipes import SAProj, parse_recipe
from skillgraft.train import TrainConfig, Trainer, TrainingError, encode, fine_tune, mix_replay


@pytest.fixture(scope="module")
def tokenizer():
    return demo.build_tokenizer()


def test_encode_masks_the_prompt_and_ends_the_answer_with_eos(tokenizer):
    e = encode(tokenizer, "count : a b c", "3", max_length=32)
    answer = [t for t in e.labels if t != -100]
    assert tokenizer.convert_ids_to_tokens(answer) == ["3", demo.SPECIAL["eos"]]
    assert e.input_ids[: len(e.input_ids) - 2] == tokenizer("count : a b c")["input_ids"]
    assert e.labels[: len(e.input_ids) - 2] == [-100] * (len(e.input_ids) - 2)


def test_encode_refuses_examples_over_max_length(tokenizer):
    with pytest.raises(TrainingError, match="over max_length=4"):
        encode(tokenizer, "first : a b c d e", "a", max_length=4)


def run(tokenizer, recipe, steps=30, seed=0):
    model = demo.build_model(tokenizer, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = demo.generate("count", 64, seed=1)
    cfg = TrainConfig(steps=steps, learning_rate=3e-3, batch_size=8, seed=seed, log_every=5, progress=False)
    out = fine_tune(model, tokenizer, data, parse_recipe(recipe), cfg)
    changed = sorted(k for k, v in out.model.state_dict().items() if not torch.equal(v, before[k]))
    return out, changed


def test_sa_proj_fine_tune_moves_only_attention_projections_and_lowers_the_loss(tokenizer):
    out, changed = run(tokenizer, "sa_proj")
    assert changed == sorted(f"model.layers.{i}.self_attn.{p}_proj.weight" for i in range(2) for p in "qkvo")
    assert out.record.trainable_parameters == sum(out.model.state_dict()[k].numel() for k in changed)
    assert out.record.trained_tensors == changed
    assert len(out.record.losses) == 6
    assert out.record.losses[-1] < out.record.losses[0] * 0.8


def test_fine_tune_is_repeatable_for_a_seed(tokenizer):
    a, _ = run(tokenizer, "sa_proj", steps=10)
    b, _ = run(tokenizer, "sa_proj", steps=10)
    c, _ = run(tokenizer, "sa_proj", steps=10, seed=1)
    assert a.record.losses == b.record.losses
    assert a.record.losses != c.record.losses
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k


def test_a_trainer_driven_step_by_step_is_fine_tune(tokenizer):
    whole, _ = run(tokenizer, "sa_proj", steps=10)
    trainer = Trainer(demo.build_model(tokenizer, seed=0), tokenizer, parse_recipe("sa_proj"),
                      TrainConfig(steps=10, learning_rate=3e-3, batch_size=8, seed=0, log_every=5, progress=False))  # fmt: skip
    with pytest.raises(TrainingError, match="before setup"):
        trainer.step()
    trainer.setup(demo.generate("count", 64, seed=1))
    seen = []
    while trainer.step():
        seen.append(trainer.done)  # a caller can act between steps
    assert seen == list(range(1, 10)) and trainer.running_out and not trainer.stopped
    out = trainer.finish()
    assert out.record.losses == whole.record.losses and out.record.steps == 10
    for k, v in out.model.state_dict().items():
        assert torch.equal(v, whole.model.state_dict()[k]), k


def test_lora_merges_back_into_the_base_names(tokenizer):
    out, changed = run(tokenizer, "lora", steps=5)
    assert set(out.model.state_dict()) == set(demo.build_model(tokenizer).state_dict())
    assert changed and all("self_attn" in k for k in changed)


def test_fine_tune_refuses_empty_data(tokenizer):
    with pytest.raises(TrainingError, match="no training examples"):
        fine_tune(demo.build_model(tokenizer), tokenizer, [], SAProj(), TrainConfig(steps=1, progress=False))


def test_mix_replay_adds_old_examples_to_the_asked_share():
    new, old = list(range(30)), list(range(100, 200))
    mix = mix_replay(new, old, 0.5, seed=0)
    assert mix[:30] == new and len(mix) == 60 and all(x >= 100 for x in mix[30:])
    assert mix == mix_replay(new, old, 0.5, seed=0)
    assert mix_replay(new, old, 0.0, seed=0) == new
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        mix_replay(new, old, 1.0, seed=0)
