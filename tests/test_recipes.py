"""Recipes: which parameters train, checked against the real parameter names of tiny models built from configs."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import warnings

import pytest
import torch
import transformers as tf
from pydantic import ValidationError

from skillgraft.recipes import (
    KNOWN_MODEL_TYPES,
    RECIPE_NAMES,
    Full,
    FusedProjection,
    LayerOutOfRange,
    LoRA,
    MLPGateUp,
    NothingMatched,
    Patterns,
    SAProj,
    UnknownArchitecture,
    apply_recipe,
    architecture_for,
    count_parameters,
    finish,
    parse_recipe,
    select,
)

# --- tiny models: two decoder layers, hidden 64 -------------------------------------------------------------------

_TEXT = dict(
    vocab_size=200,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
_MROPE = {"type": "mrope", "mrope_section": [2, 3, 3]}
_CLIP = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    image_size=28,
    patch_size=14,
    projection_dim=32,
)
_SIGLIP = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14
)
_QWEN_VISION = dict(
    depth=1,
    embed_dim=32,
    hidden_size=64,
    num_heads=2,
    in_chans=3,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
)


def _causal(config):
    return lambda: tf.AutoModelForCausalLM.from_config(config)


BUILDERS = {
    "llama": _causal(tf.LlamaConfig(**_TEXT)),
    "mistral": _causal(tf.MistralConfig(**_TEXT)),
    "qwen2": _causal(tf.Qwen2Config(**_TEXT)),
    "qwen3": _causal(tf.Qwen3Config(**_TEXT, head_dim=16)),
    "gemma": _causal(tf.GemmaConfig(**_TEXT, head_dim=16)),
    "gemma2": _causal(tf.Gemma2Config(**_TEXT, head_dim=16)),
    "gemma3_text": _causal(tf.Gemma3TextConfig(**_TEXT, head_dim=16)),
    "phi3": _causal(tf.Phi3Config(**_TEXT)),
    "gpt2": _causal(
        tf.GPT2Config(vocab_size=200, n_embd=64, n_layer=2, n_head=4, n_positions=64, bos_token_id=1, eos_token_id=2)
    ),
    "bert": lambda: tf.AutoModelForMaskedLM.from_config(
        tf.BertConfig(vocab_size=200, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    ),
    "gemma3": lambda: tf.Gemma3ForConditionalGeneration(
        tf.Gemma3Config(text_config=dict(_TEXT, head_dim=16), vision_config=_SIGLIP, mm_tokens_per_image=4)
    ),
    "llava": lambda: tf.LlavaForConditionalGeneration(
        tf.LlavaConfig(
            vision_config=tf.CLIPVisionConfig(**_CLIP), text_config=tf.LlamaConfig(**_TEXT), image_token_index=199
        )
    ),
    "llava_next": lambda: tf.LlavaNextForConditionalGeneration(
        tf.LlavaNextConfig(
            vision_config=tf.CLIPVisionConfig(**_CLIP),
            text_config=tf.LlamaConfig(**_TEXT),
            image_token_index=199,
            image_grid_pinpoints=[[28, 28]],
        )
    ),
    "llava_onevision": lambda: tf.LlavaOnevisionForConditionalGeneration(
        tf.LlavaOnevisionConfig(
            vision_config=tf.SiglipVisionConfig(**_SIGLIP),
            text_config=tf.Qwen2Config(**_TEXT),
            image_token_index=199,
            image_grid_pinpoints=[[28, 28]],
        )
    ),
    "qwen2_vl": lambda: tf.Qwen2VLForConditionalGeneration(
        tf.Qwen2VLConfig(text_config=dict(_TEXT, rope_scaling=_MROPE), vision_config=_QWEN_VISION)
    ),
    "qwen2_5_vl": lambda: tf.Qwen2_5_VLForConditionalGeneration(
        tf.Qwen2_5_VLConfig(
            text_config=dict(_TEXT, rope_scaling=_MROPE),
            vision_config=dict(
                depth=1,
                hidden_size=32,
                intermediate_size=64,
                out_hidden_size=64,
                num_heads=2,
                in_chans=3,
                patch_size=14,
                spatial_merge_size=2,
                temporal_patch_size=2,
                fullatt_block_indexes=[0],
            ),
        )
    ),
}

# Language-model decoder-layer prefix of each tiny model (the vision tower's layers live elsewhere).
_VLM = {"gemma3", "llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl"}
_LAYER_PREFIX = {t: "model.language_model.layers" for t in _VLM}
_LAYER_PREFIX |= {"gpt2": "transformer.h", "bert": "bert.encoder.layer"}
_VISION = re.compile(r"(^|\.)(visual|vision_tower|multi_modal_projector|image_newline)(\.|$)")


def build(model_type: str) -> torch.nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = BUILDERS[model_type]()
    assert model.config.model_type == model_type
    return model


@functools.cache
def names_of(model_type: str) -> tuple[str, ...]:
    return tuple(name for name, _ in build(model_type).named_parameters())


def layer_names(model_type: str, modules: list[str], params=("weight",), layers=(0, 1)) -> list[str]:
    prefix = _LAYER_PREFIX.get(model_type, "model.layers")
    return sorted(f"{prefix}.{i}.{m}.{p}" for i in layers for m in modules for p in params)


LLAMA_ATTN = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]

# --- the map against real parameter names --------------------------------------------------------------------------


def test_every_known_model_type_has_a_tiny_model_in_these_tests():
    assert sorted(BUILDERS) == sorted(KNOWN_MODEL_TYPES)


@pytest.mark.parametrize("model_type", sorted(BUILDERS))
def test_sa_proj_selects_attention_projections_of_every_language_layer_only(model_type):
    names = names_of(model_type)
    selection = select(names, "sa_proj", model_type)

    expected_modules = {
        "gpt2": ["attn.c_attn", "attn.c_proj"],
        "phi3": ["self_attn.qkv_proj", "self_attn.o_proj"],
        "bert": ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"],
    }.get(model_type, LLAMA_ATTN)
    expected = [n for n in layer_names(model_type, expected_modules, params=("weight", "bias")) if n in names]
    assert list(selection.trainable) == expected
    assert len(selection.modules) == 2 * len(expected_modules)
    assert selection.layers == (0, 1) and selection.layer_count == 2
    assert not any(_VISION.search(name) for name in selection.trainable)


@pytest.mark.parametrize("model_type", sorted(BUILDERS))
def test_mlp_gate_up_selects_gate_and_up_and_never_down(model_type):
    names = names_of(model_type)
    selection = select(names, "mlp_gate_up", model_type)

    expected_modules = {"gpt2": ["mlp.c_fc"], "bert": ["intermediate.dense"], "phi3": ["mlp.gate_up_proj"]}.get(
        model_type, ["mlp.gate_proj", "mlp.up_proj"]
    )
    expected = [n for n in layer_names(model_type, expected_modules, params=("weight", "bias")) if n in names]
    assert list(selection.trainable) == expected
    assert not any(re.search(r"(down_proj|mlp\.c_proj|\d\.output\.dense)", n) for n in selection.trainable)


def test_sa_proj_on_llama_selects_exactly_the_four_projection_weights_per_layer():
    selection = select(names_of("llama"), SAProj(), "llama")
    assert len(selection.trainable) == 4 * 2
    assert selection.trainable[:4] == (
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.self_attn.o_proj.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.v_proj.weight",
    )
    assert selection.modules == tuple(n.removesuffix(".weight") for n in selection.trainable)
    assert selection.summary() == (
        "recipe sa_proj(projections=['q', 'k', 'v', 'o'], layers=None) on llama: 8 of 21 parameters train, "
        "in 8 modules; layers 0-1 (of 2)"
    )


def test_sa_proj_on_gpt2_selects_c_attn_and_attn_c_proj_with_biases_but_not_mlp_c_proj():
    selection = select(names_of("gpt2"), "sa_proj", "gpt2")
    assert list(selection.trainable) == layer_names("gpt2", ["attn.c_attn", "attn.c_proj"], params=("bias", "weight"))
    assert len(selection.trainable) == 8
    assert not any("mlp" in name for name in selection.trainable)


def test_sa_proj_on_qwen2_vl_selects_language_model_attention_and_nothing_visual():
    names = names_of("qwen2_vl")
    assert "model.visual.blocks.0.attn.qkv.weight" in names and "model.visual.blocks.0.attn.proj.weight" in names
    selection = select(names, "sa_proj", "qwen2_vl")
    # q/k/v carry biases in Qwen2, o does not: 4 weights + 3 biases per layer.
    assert len(selection.trainable) == 7 * 2
    assert all(n.startswith("model.language_model.layers.") and ".self_attn." in n for n in selection.trainable)
    assert selection.frozen_prefixes == ("model.visual",)


def test_sa_proj_on_bert_takes_attention_output_dense_as_o_but_not_the_mlp_output_dense():
    selection = select(names_of("bert"), SAProj(projections=("o",)), "bert")
    assert list(selection.trainable) == layer_names("bert", ["attention.output.dense"], params=("bias", "weight"))


# --- full ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["qwen2_vl", "llava", "gemma3"])
def test_full_on_a_vlm_freezes_vision_tower_and_projector_unless_include_vision(model_type):
    names = names_of(model_type)
    vision = [n for n in names if _VISION.search(n)]
    assert vision  # the tiny model has a vision tower and a projector

    language = select(names, Full(), model_type)
    assert sorted(set(language.trainable) | set(vision)) == sorted(names)
    assert not set(language.trainable) & set(vision)
    assert "model.language_model.embed_tokens.weight" in language.trainable
    assert "model.language_model.norm.weight" in language.trainable

    everything = select(names, Full(include_vision=True), model_type)
    assert sorted(everything.trainable) == sorted(names)
    assert everything.frozen_prefixes == ()


def test_full_on_qwen2_vl_keeps_the_merger_frozen_and_trains_the_head():
    selection = select(names_of("qwen2_vl"), "full", "qwen2_vl")
    assert "lm_head.weight" in selection.trainable
    assert not any(n.startswith("model.visual.") for n in selection.trainable)
    assert any(n.startswith("model.visual.merger.") for n in names_of("qwen2_vl"))


# --- layers --------------------------------------------------------------------------------------------------------


def test_layers_pick_only_the_chosen_decoder_layers():
    names = [f"model.layers.{i}.self_attn.{p}_proj.weight" for i in range(12) for p in "qkvo"]
    selection = select(names, SAProj(projections=("q", "v"), layers=[2, 3, 10]), "llama")
    assert selection.layers == (2, 3, 10)
    assert selection.layer_count == 12
    assert list(selection.trainable) == sorted(
        f"model.layers.{i}.self_attn.{p}_proj.weight" for i in (2, 3, 10) for p in "qv"
    )
    assert "layers 2-3, 10 (of 12)" in selection.summary()


def test_a_layer_the_model_does_not_have_is_an_error_naming_its_layer_count():
    with pytest.raises(LayerOutOfRange, match=r"layers \[2, 5\] are not in this llama model, which has 2 decoder"):
        select(names_of("llama"), MLPGateUp(layers=[0, 2, 5]), "llama")


def test_lora_layers_restrict_the_adapted_modules():
    selection = select(names_of("qwen2_vl"), LoRA(layers=[1]), "qwen2_vl")
    assert selection.modules == tuple(sorted(f"model.language_model.layers.1.{m}" for m in LLAMA_ATTN))
    assert selection.trainable == tuple(m + ".weight" for m in selection.modules)  # weights, not the q/k/v biases


# --- errors that name the fix ------------------------------------------------------------------------------------


def test_unknown_architecture_lists_the_known_types_and_suggests_patterns():
    with pytest.raises(UnknownArchitecture) as error:
        select(["backbone.layers.0.mixer.in_proj.weight"], "sa_proj", "mamba")
    message = str(error.value)
    assert "'mamba'" in message and "patterns" in message
    assert all(model_type in message for model_type in KNOWN_MODEL_TYPES)


def test_patterns_matching_nothing_raises_naming_the_modules_it_saw():
    with pytest.raises(NothingMatched) as error:
        select(names_of("gpt2"), Patterns(include=[r"\.q_proj\."]), "gpt2")
    message = str(error.value)
    assert "patterns" in message and "28 parameters" in message
    assert "transformer.h.0.attn.c_attn" in message and "transformer.h.0.mlp.c_proj" in message
    assert "transformer.h.1." not in message  # a sample: the first layer only


def test_patterns_on_an_unknown_model_type_train_what_they_match():
    names = [
        "backbone.embed.weight",
        "backbone.layers.0.mixer.in_proj.weight",
        "backbone.layers.0.mixer.out_proj.weight",
        "backbone.layers.1.mixer.in_proj.weight",
    ]
    selection = select(names, {"kind": "patterns", "include": [r"mixer\."], "exclude": [r"out_proj"]}, "mamba")
    assert selection.trainable == ("backbone.layers.0.mixer.in_proj.weight", "backbone.layers.1.mixer.in_proj.weight")
    assert selection.layer_count is None and selection.layers == ()
    with pytest.raises(NothingMatched, match=r"3 matched include but all were excluded"):
        select(names, Patterns(include=["mixer"], exclude=["mixer"]), "mamba")


def test_sa_proj_with_part_of_gpt2_fused_qkv_is_refused():
    assert architecture_for("gpt2").fused == {"attn.c_attn": ("q", "k", "v")}
    assert architecture_for("phi3").fused == {"self_attn.qkv_proj": ("q", "k", "v"), "mlp.gate_up_proj": ("gate", "up")}
    with pytest.raises(FusedProjection, match=r"fuses q, k, v in one module 'attn.c_attn'.*add k to projections"):
        select(names_of("gpt2"), SAProj(projections=("q", "v", "o")), "gpt2")
    only_o = select(names_of("gpt2"), SAProj(projections=("o",)), "gpt2")
    assert list(only_o.trainable) == layer_names("gpt2", ["attn.c_proj"], params=("bias", "weight"))


def test_a_known_model_type_whose_names_do_not_fit_raises_nothing_matched():
    with pytest.raises(NothingMatched, match=r"modules under 'encoder.blocks.0'"):
        select(["encoder.blocks.0.attn.weight", "encoder.blocks.1.attn.weight"], "sa_proj", "llama")


@pytest.mark.parametrize(
    "value, fix",
    [
        ({"kind": "sa_proj", "projections": ["q", "x"]}, r"unknown projections \['x'\]: use letters among q, k, v, o"),
        ({"kind": "sa_proj", "layers": [0, -1]}, r"layers \[-1\] are negative"),
        ({"kind": "mlp_gate_up", "layers": []}, r"layers is empty: use null for every decoder layer"),
        ({"kind": "lora", "layers": [1, 1]}, r"layers \[1\] are listed more than once"),
        ({"kind": "patterns", "include": []}, r"include is empty: give at least one regex"),
        ({"kind": "patterns", "include": ["attn("]}, r"'attn\(' is not a valid regex"),
        ({"kind": "lora", "r": 0}, r"greater than or equal to 1"),
        ({"kind": "full", "include_vison": True}, r"include_vison\s+Extra inputs are not permitted"),
    ],
)
def test_bad_knobs_are_rejected_with_the_fix(value, fix):
    with pytest.raises(ValidationError, match=fix):
        parse_recipe(value)


def test_parse_recipe_takes_a_bare_name_a_mapping_or_a_recipe():
    assert RECIPE_NAMES == ("sa_proj", "mlp_gate_up", "full", "lora", "patterns")
    assert parse_recipe("sa_proj") == SAProj(projections=("q", "k", "v", "o"), layers=None)
    assert parse_recipe("lora") == LoRA(target="sa_proj", r=8, alpha=16, dropout=0.0)
    assert parse_recipe({"kind": "lora", "target": "mlp_gate_up", "r": 4}).roles() == ("gate", "up")
    recipe = MLPGateUp(layers=[1])
    assert parse_recipe(recipe) is recipe
    with pytest.raises(ValueError, match=r"unknown recipe 'attention': use one of sa_proj, mlp_gate_up, full, lora"):
        parse_recipe("attention")
    with pytest.raises(ValueError, match=r"unknown recipe kind 'skillgraft.recipes.SAProj'"):
        parse_recipe({"kind": "skillgraft.recipes.SAProj"})
    with pytest.raises(ValueError, match=r"patterns recipe needs regexes"):
        parse_recipe("patterns")


def test_selection_round_trips_through_json_for_the_manifest():
    selection = select(names_of("llava"), LoRA(target="mlp_gate_up", r=4), "llava")
    restored = type(selection).model_validate_json(selection.model_dump_json())
    assert restored == selection
    assert isinstance(restored.recipe, LoRA) and restored.recipe.r == 4


# --- acting on a model ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type, recipe", [("llama", "sa_proj"), ("gpt2", "mlp_gate_up"), ("qwen2_vl", "full")])
def test_apply_recipe_leaves_exactly_the_selection_trainable(model_type, recipe):
    model = build(model_type)
    model, selection = apply_recipe(model, recipe)

    parameters = dict(model.named_parameters())
    trainable = sorted(name for name, p in parameters.items() if p.requires_grad)
    assert trainable == list(selection.trainable)
    expected = sum(parameters[name].numel() for name in selection.trainable)
    assert count_parameters(model) == (expected, sum(p.numel() for p in parameters.values()))
    assert 0 < expected < count_parameters(model)[1]


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")  # raised inside peft, not by skillgraft
def test_lora_on_a_vlm_adapts_only_the_language_model_and_finish_merges_full_weights():
    model = build("qwen2_vl")
    base = {name: p.detach().clone() for name, p in model.named_parameters()}
    model, selection = apply_recipe(model, LoRA(r=4, alpha=8))

    names = [name for name, _ in model.named_parameters()]
    lora = [name for name, p in model.named_parameters() if p.requires_grad]
    assert lora and all("lora_" in name for name in lora)
    assert not any("lora_" in name for name in names if "visual" in name)
    assert len(lora) == 2 * len(selection.modules) == 2 * 4 * 2  # A and B on q/k/v/o of two layers
    assert count_parameters(model)[0] == sum(
        4 * (w.shape[0] + w.shape[1]) for w in (base[m + ".weight"] for m in selection.modules)
    )

    torch.manual_seed(0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    input_ids = torch.randint(3, 190, (2, 8))
    model(input_ids=input_ids, labels=input_ids).loss.backward()
    optimizer.step()

    merged = finish(model, "lora")
    merged_params = dict(merged.named_parameters())
    assert sorted(merged_params) == sorted(base)
    changed = sorted(name for name, p in merged_params.items() if not torch.equal(p, base[name]))
    assert changed == list(selection.trainable)
    assert all(merged_params[name].shape == base[name].shape for name in changed)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")  # raised inside peft, not by skillgraft
def test_lora_on_gpt2_adapts_the_fused_conv1d_and_merges_back():
    model = build("gpt2")
    base = {name: p.detach().clone() for name, p in model.named_parameters()}
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*fan_in_fan_out")  # set up front, not flipped by PEFT
        model, selection = apply_recipe(model, {"kind": "lora", "layers": [0]})
    assert selection.modules == ("transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj")

    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    input_ids = torch.randint(3, 190, (1, 8))
    model(input_ids=input_ids, labels=input_ids).loss.backward()
    optimizer.step()

    merged = dict(finish(model, "lora").named_parameters())
    changed = sorted(name for name, p in merged.items() if not torch.equal(p, base[name]))
    assert changed == ["transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_proj.weight"]


def test_finish_is_the_identity_for_recipes_without_adapters():
    model = build("llama")
    assert finish(model, "sa_proj") is model


def test_importing_recipes_does_not_import_prefect_nor_torch():
    code = "import sys, skillgraft.recipes; print(sorted(m for m in ('prefect', 'torch', 'peft') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
