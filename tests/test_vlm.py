"""Vision-language models through the same fine-tune: tiny Qwen2-VL and LLaVA built from configs, SA Proj of the
language model tuned on image + prompt → answer examples, vision tower and projector untouched; text-only prompts
through the VLM's language model for prediction and the drift probes."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from skillgraft.data import Example
from skillgraft.evaluate import predict
from skillgraft.probe import measure
from skillgraft.recipes import SAProj, architecture_for
from skillgraft.train import MultimodalExample, TrainConfig, fine_tune

COLOURS = {"red": (1.0, -1.0, -1.0), "green": (-1.0, 1.0, -1.0), "blue": (-1.0, -1.0, 1.0)}
SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<image>", "<vision_start>", "<vision_end>", "<video>"]
WORDS = ["colour", "?", "say", ":", *COLOURS, *"abcdefgh", *"0123456789"]


def build_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", padding_side="left")  # fmt: skip


TOK = build_tokenizer()
IDS = {t: TOK.convert_tokens_to_ids(t) for t in SPECIAL}
TEXT = dict(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, pad_token_id=IDS["<pad>"], bos_token_id=IDS["<s>"], eos_token_id=IDS["</s>"])  # fmt: skip


def qwen2_vl():
    config = tf.Qwen2VLConfig(
        text_config=dict(TEXT, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, in_chans=3, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=IDS["<image>"], video_token_id=IDS["<video>"], vision_start_token_id=IDS["<vision_start>"],
        vision_end_token_id=IDS["<vision_end>"],
    )  # fmt: skip
    return tf.Qwen2VLForConditionalGeneration(config)


def llava():
    vision = tf.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                 image_size=28, patch_size=14, projection_dim=32)  # fmt: skip
    config = tf.LlavaConfig(vision_config=vision, text_config=tf.LlamaConfig(**TEXT), image_token_index=IDS["<image>"])
    return tf.LlavaForConditionalGeneration(config)


def image_example(model_type: str, colour: str, rng: torch.Generator) -> MultimodalExample:
    """A 28×28 image of one colour (plus noise) and the question 'colour ?': only the image tells the answer."""
    rgb = torch.tensor(COLOURS[colour]).view(3, 1, 1)
    if model_type == "llava":  # (1, 3, H, W); a 28×28 image is 2×2 patches of 14: four image tokens
        pixels = (rgb + 0.3 * torch.randn(3, 28, 28, generator=rng)).unsqueeze(0)
        return MultimodalExample(prompt="<image> " * 4 + "colour ?", answer=colour, inputs={"pixel_values": pixels})
    # Qwen2-VL: 4 patches of 3 channels × 2 frames × 14 × 14 values, merged 2×2 into one image token
    patches = rgb.view(3, 1).expand(3, 2 * 14 * 14).reshape(1, -1) + 0.3 * torch.randn(
        4, 3 * 2 * 14 * 14, generator=rng
    )
    prompt = "<vision_start> <image> <vision_end> colour ?"
    ids = TOK(prompt)["input_ids"]
    return MultimodalExample(
        prompt=prompt, answer=colour, inputs={"pixel_values": patches, "image_grid_thw": torch.tensor([[1, 2, 2]])},
        token_inputs={"mm_token_type_ids": [int(i == IDS["<image>"]) for i in ids]},
    )  # fmt: skip


def examples(model_type: str, n: int, seed: int) -> list[MultimodalExample]:
    rng = torch.Generator().manual_seed(seed)
    return [image_example(model_type, list(COLOURS)[i % 3], rng) for i in range(n)]


@torch.no_grad()
def colour_accuracy(model, data: list[MultimodalExample]) -> float:
    """Teacher-forced: does the model's most likely first answer token name the image's colour?"""
    colour_ids = torch.tensor(TOK.convert_tokens_to_ids(list(COLOURS)))
    hits = 0
    for ex in data:
        ids = torch.tensor([TOK(ex.prompt)["input_ids"]])
        extra = {k: torch.tensor([list(v)]) for k, v in ex.token_inputs.items()}
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), **ex.inputs, **extra).logits[0, -1]
        hits += int(colour_ids[logits[colour_ids].argmax()] == TOK.convert_tokens_to_ids(ex.answer))
    return hits / len(data)


BUILD = {"qwen2_vl": qwen2_vl, "llava": llava}


@pytest.mark.parametrize("model_type", ["qwen2_vl", "llava"])
def test_sa_proj_on_a_vlm_learns_from_images_with_vision_tower_and_projector_frozen(model_type):
    torch.manual_seed(0)
    model = BUILD[model_type]()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    held_out = examples(model_type, 30, seed=2)
    assert colour_accuracy(model, held_out) < 0.5  # untrained: about chance (1/3)
    cfg = TrainConfig(steps=60, learning_rate=1e-2, batch_size=12, progress=False, log_every=10)
    out = fine_tune(model, TOK, examples(model_type, 96, seed=1), SAProj(), cfg)

    changed = {k for k, v in out.model.state_dict().items() if not torch.equal(v, before[k])}
    arch = architecture_for(model_type)
    frozen = {k for k in before if arch.frozen_prefix(k) is not None}
    assert frozen and not changed & frozen  # vision tower and projector bitwise unchanged
    assert changed == set(out.selection.trainable)
    assert all(".language_model.layers." in k and ".self_attn." in k for k in changed)
    assert {k.rsplit(".", 2)[-2] for k in changed} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    # the prompt is the same for every colour: only the (frozen) vision path can tell the answer. (The loss can't
    # fall far: with a random, frozen lm_head and embeddings the logits stay small; the ranking is what moves.)
    assert out.record.losses[-1] < out.record.losses[0] - 0.3
    assert colour_accuracy(out.model, held_out) >= 0.9


@pytest.mark.parametrize("model_type", ["qwen2_vl", "llava"])
def test_text_only_prompts_through_a_vlm_language_model_train_predict_and_probe(model_type):
    torch.manual_seed(0)
    start = BUILD[model_type]().eval()
    model = BUILD[model_type]()
    model.load_state_dict(start.state_dict())
    data = [Example(prompt=f"say : {c}", answer=c) for c in "abcdefgh"] * 4
    cfg = TrainConfig(steps=40, learning_rate=1e-2, batch_size=8, progress=False, log_every=10)
    out = fine_tune(model, TOK, data, SAProj(), cfg)
    preds = predict(out.model, TOK, [f"say : {c}" for c in "abcdefgh"], max_new_tokens=2)
    assert sum(p.split()[:1] == [c] for p, c in zip(preds, "abcdefgh")) >= 6
    probe = measure(
        start, out.model, TOK, [f"colour ? {c}" for c in "abcd"], answer_ids=TOK.convert_tokens_to_ids(list("abc"))
    )
    assert probe.kl > 0.01 and 0 <= probe.champion <= 1 and probe.answer_delta is not None
    assert measure(start, start, TOK, ["colour ? a"]).kl == pytest.approx(0.0, abs=1e-6)


def test_image_examples_given_to_a_text_model_stop_before_training_with_the_reason():
    from PIL import Image

    from skillgraft import demo
    from skillgraft.train import TrainingError
    from skillgraft.vision import ImageExample

    tok = demo.build_tokenizer()
    model = demo.build_model(tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = [ImageExample("first a b", "a", Image.new("RGB", (8, 8), "red"))] * 4
    with pytest.raises(TrainingError, match="examples carry images but this llama model came with a text tokenizer"):
        fine_tune(model, tok, data, SAProj(), TrainConfig(steps=2, progress=False))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_drift_probes_read_old_image_prompts_with_their_pictures():
    import numpy as np
    from vlm_fixtures import build_model, build_processor, picture

    from skillgraft.probe import reference
    from skillgraft.vision import ImageExample

    processor = build_processor()
    model, other = build_model(processor, seed=0), build_model(processor, seed=1)
    rng = np.random.default_rng(0)
    exs = [ImageExample("what colour is this picture ?", c, picture(c, rng)) for c in ["red", "green", "blue"] * 3]
    assert measure(model, model, processor, exs).kl == pytest.approx(0.0, abs=1e-6)
    probe = measure(
        model, other, processor, [*exs, "say : a"], answer_ids=[processor.tokenizer.convert_tokens_to_ids("a")]
    )
    assert probe.prompts == 10 and probe.kl > 0.01 and 0 <= probe.candidate <= 1 and probe.answer_delta is not None
    # the pixels reach the model: one question about a red and about a blue picture is probed differently
    red, blue = (
        reference(model, processor, [ImageExample(exs[0].prompt, "", picture(c, rng))]) for c in ("red", "blue")
    )
    assert red.logprobs[0].shape == blue.logprobs[0].shape and not torch.allclose(red.logprobs[0], blue.logprobs[0])


def test_drift_watch_probes_old_image_prompts_while_a_vlm_learns_a_text_task():
    import numpy as np
    from vlm_fixtures import build_model, build_processor, picture

    from skillgraft.train import DriftWatch
    from skillgraft.vision import ImageExample

    processor = build_processor()
    model = build_model(processor)
    rng = np.random.default_rng(0)
    old = [ImageExample("what colour is this picture ?", c, picture(c, rng)) for c in ["red", "green", "blue"] * 2]
    # an image example in the training mix too: it is made into model inputs by the processor, beside text ones
    data = [Example(prompt=f"say : {c}", answer=c) for c in "abcdefgh"] * 3 + old[:2]
    cfg = TrainConfig(steps=20, learning_rate=1e-2, batch_size=8, progress=False, log_every=5,
                      drift_watch=DriftWatch(budget=1e9, every=5, prompts=6))  # fmt: skip
    out = fine_tune(model, processor, data, SAProj(), cfg, probe_prompts=old)
    curve = out.record.drift
    assert curve is not None and curve.prompts == 6 and [p.step for p in curve.points] == [0, 5, 10, 15, 20]
    assert curve.points[0].drift == pytest.approx(0.0, abs=1e-6) and curve.points[-1].drift > 0
