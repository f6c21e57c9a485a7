"""skillgraft.models: loading (local dir, GGUF, hub id), weight hashing, and deltas that replay bit-exactly."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers / huggingface_hub read it: tests never hit the hub

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    Gemma3Config,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from skillgraft.models import (
    DeltaError,
    LoadedModel,
    ModelSourceError,
    PickleWeightsRefused,
    apply_deltas,
    delta_from_bytes,
    delta_to_bytes,
    extract_delta,
    flatten_deltas,
    load_model,
    load_snapshot,
    save_pretrained_dir,
    snapshot_files,
    state_dict_sha256,
)
from skillgraft.models import load as load_module

Q0 = "model.layers.0.self_attn.q_proj.weight"
V1 = "model.layers.1.self_attn.v_proj.weight"
EMBED = "model.embed_tokens.weight"
WORDS = (
    "the cat sat on a mat and one dog ran to two red birds while three green frogs sang under four tall trees "
    "near five blue lakes where six small fish swam past seven old boats beside eight quiet hills"
).split()


def tiny_config(**overrides) -> LlamaConfig:
    sizes = dict(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return LlamaConfig(**(sizes | overrides))


def build_model(seed: int = 0, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_config(**overrides)).eval()


def build_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=64, special_tokens=["[UNK]", "[PAD]", "[BOS]", "[EOS]"])
    tok.train_from_iterator([" ".join(WORDS)] * 3, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]"
    )


def train_step(model: torch.nn.Module, names: list[str], seed: int = 1, lr: float = 0.5) -> None:
    """One SGD step on ``names`` only (every other parameter frozen)."""
    params = dict(model.named_parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    chosen = [params[n] for n in names]
    for p in chosen:
        p.requires_grad_(True)
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.SGD(chosen, lr=lr)
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.requires_grad_(True)


def logits(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.arange(0, 24).reshape(2, 12) % 64
    with torch.no_grad():
        return model(input_ids=ids).logits


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    different = [n for n in sa if sa[n].dtype != sb[n].dtype or not torch.equal(sa[n], sb[n])]
    assert different == []


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer()


@pytest.fixture
def tiny_dir(tmp_path, tokenizer) -> Path:
    return save_pretrained_dir(build_model(0), tokenizer, tmp_path / "tiny")


# --- deltas ---------------------------------------------------------------------------------------------------


def test_extract_delta_holds_exactly_the_tensors_training_changed():
    base, tuned = build_model(0), build_model(0)
    train_step(tuned, [Q0])

    delta = extract_delta(base.state_dict(), tuned.state_dict())

    assert sorted(delta) == [Q0]
    assert torch.equal(delta[Q0], tuned.state_dict()[Q0])
    assert not torch.equal(delta[Q0], base.state_dict()[Q0])
    # a copy, not a view: training further does not change a delta already taken
    train_step(tuned, [Q0], seed=2)
    assert not torch.equal(delta[Q0], tuned.state_dict()[Q0])


def test_delta_bytes_round_trip_bit_exactly_with_metadata():
    base, tuned = build_model(0), build_model(0)
    train_step(tuned, [Q0, V1])
    delta = extract_delta(base.state_dict(), tuned.state_dict())

    data = delta_to_bytes(delta, {"base_sha256": "abc", "version": "v1"})
    loaded, metadata = delta_from_bytes(data)

    assert metadata == {"base_sha256": "abc", "version": "v1"}
    assert sorted(loaded) == [Q0, V1]
    for name in delta:
        assert loaded[name].dtype == delta[name].dtype and torch.equal(loaded[name], delta[name])
    assert data[8:].lstrip()[:1] == b"{"  # a safetensors header, not a pickle


def test_delta_from_bytes_rejects_garbage_with_its_own_error():
    with pytest.raises(DeltaError, match="not a valid safetensors delta"):
        delta_from_bytes(b"\x80\x04\x95 this is a pickle, not a delta")


def test_delta_metadata_must_be_strings():
    with pytest.raises(DeltaError, match="strings"):
        delta_to_bytes({}, {"steps": 3})  # type: ignore[dict-item]


def test_fresh_base_plus_delta_reproduces_tuned_weights_and_logits():
    base, tuned = build_model(0), build_model(0)
    train_step(tuned, [Q0])
    delta, _ = delta_from_bytes(delta_to_bytes(extract_delta(base.state_dict(), tuned.state_dict())))

    fresh = build_model(0)
    assert not torch.equal(logits(fresh), logits(tuned))
    apply_deltas(fresh, [delta])

    assert_same_state(fresh, tuned)
    assert torch.equal(logits(fresh), logits(tuned))
    assert state_dict_sha256(fresh) == state_dict_sha256(tuned)


def test_chain_of_two_deltas_equals_the_flattened_delta():
    base, v1 = build_model(0), build_model(0)
    train_step(v1, [Q0], seed=1)
    d1 = extract_delta(base.state_dict(), v1.state_dict())
    v2 = build_model(0)
    apply_deltas(v2, [d1])
    train_step(v2, [Q0, V1], seed=2)
    d2 = extract_delta(v1.state_dict(), v2.state_dict())

    flat = flatten_deltas([d1, d2])
    assert sorted(flat) == [Q0, V1]
    assert flat[Q0] is d2[Q0]  # the later delta wins

    chained, flattened = build_model(0), build_model(0)
    apply_deltas(chained, [d1, d2])
    apply_deltas(flattened, [flat])
    assert_same_state(chained, v2)
    assert_same_state(flattened, v2)
    assert sorted(extract_delta(base.state_dict(), v2.state_dict())) == [Q0, V1]


def test_apply_deltas_names_the_tensor_that_does_not_fit_and_leaves_the_model_unchanged():
    model = build_model(0)
    before = state_dict_sha256(model)
    good = {Q0: torch.zeros_like(model.state_dict()[Q0])}

    with pytest.raises(DeltaError, match=r"model\.layers\.9\.mlp\.up_proj\.weight: not a tensor of this model"):
        apply_deltas(model, [good, {"model.layers.9.mlp.up_proj.weight": torch.zeros(64, 32)}])
    with pytest.raises(DeltaError, match=r"q_proj\.weight: shape \(16, 32\) in the delta, \(32, 32\) in the model"):
        apply_deltas(model, [good, {Q0: torch.zeros(16, 32)}])

    assert state_dict_sha256(model) == before


def test_apply_deltas_keeps_the_model_dtype():
    model = build_model(0).to(torch.bfloat16)
    apply_deltas(model, [{Q0: torch.full((32, 32), 0.5, dtype=torch.float32)}])
    assert model.state_dict()[Q0].dtype == torch.bfloat16
    assert torch.equal(model.state_dict()[Q0], torch.full((32, 32), 0.5, dtype=torch.bfloat16))


def test_extract_delta_refuses_models_of_different_shape_or_dtype():
    small, big = build_model(0), build_model(0, num_hidden_layers=3)
    with pytest.raises(DeltaError, match=r"not in the base model: model\.layers\.2\."):
        extract_delta(small.state_dict(), big.state_dict())
    wide = build_model(0, intermediate_size=96)
    with pytest.raises(DeltaError, match=r"mlp\.down_proj\.weight: shape \(32, 64\) in the base, \(32, 96\) tuned"):
        extract_delta(small.state_dict(), wide.state_dict())
    half = build_model(0).to(torch.bfloat16)
    with pytest.raises(DeltaError, match="dtype torch.float32 in the base, torch.bfloat16 tuned"):
        extract_delta(small.state_dict(), half.state_dict())


def test_extract_delta_compares_bits_not_values():
    base = {"w": torch.tensor([0.0, float("nan")])}
    assert extract_delta(base, {"w": torch.tensor([0.0, float("nan")])}) == {}  # NaN == NaN bitwise
    assert sorted(extract_delta(base, {"w": torch.tensor([-0.0, float("nan")])})) == ["w"]  # sign bit changed


# --- hashing --------------------------------------------------------------------------------------------------


def test_state_dict_sha256_is_stable_across_builds_and_changes_with_one_value():
    a, b = build_model(0), build_model(0)
    digest = state_dict_sha256(a)
    assert len(digest) == 64
    assert state_dict_sha256(b) == digest
    assert state_dict_sha256(dict(a.state_dict())) == digest  # a mapping hashes like its module

    with torch.no_grad():
        b.model.layers[1].mlp.down_proj.weight[3, 5] += 1e-3
    assert state_dict_sha256(b) != digest
    assert state_dict_sha256(build_model(1)) != digest


def test_state_dict_sha256_reads_bfloat16_and_tells_it_from_float32():
    half_a, half_b = build_model(0).to(torch.bfloat16), build_model(0).to(torch.bfloat16)
    assert state_dict_sha256(half_a) == state_dict_sha256(half_b)
    assert state_dict_sha256(half_a) != state_dict_sha256(build_model(0))
    # dtype is part of the hash even when the bytes are identical
    bits = torch.arange(4, dtype=torch.int16)
    assert state_dict_sha256({"w": bits}) != state_dict_sha256({"w": bits.view(torch.bfloat16)})


# --- tied weights ---------------------------------------------------------------------------------------------


def test_tied_embeddings_round_trip_through_a_delta_and_a_directory(tmp_path, tokenizer):
    base, tuned = build_model(0, tie_word_embeddings=True), build_model(0, tie_word_embeddings=True)
    assert tuned.lm_head.weight is tuned.model.embed_tokens.weight
    train_step(tuned, [EMBED])

    delta = extract_delta(base.state_dict(), tuned.state_dict())
    assert EMBED in delta and set(delta) <= {EMBED, "lm_head.weight"}
    delta, _ = delta_from_bytes(delta_to_bytes(delta))
    fresh = build_model(0, tie_word_embeddings=True)
    apply_deltas(fresh, [delta])
    assert fresh.lm_head.weight is fresh.model.embed_tokens.weight  # still tied
    assert_same_state(fresh, tuned)
    assert torch.equal(logits(fresh), logits(tuned))

    loaded = load_model(str(save_pretrained_dir(tuned, tokenizer, tmp_path / "tied")))
    assert loaded.model.lm_head.weight is loaded.model.model.embed_tokens.weight
    assert_same_state(loaded.model, tuned)


def test_delta_to_bytes_accepts_tensors_sharing_storage():
    shared = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    tensors, _ = delta_from_bytes(delta_to_bytes({"a": shared, "b": shared, "c": shared.t()}))
    assert torch.equal(tensors["a"], shared) and torch.equal(tensors["b"], shared)
    assert torch.equal(tensors["c"], shared.t())


# --- loading: local directories -------------------------------------------------------------------------------


def test_save_pretrained_dir_then_load_model_round_trips_bit_exactly(tiny_dir, tokenizer):
    assert (tiny_dir / "model.safetensors").is_file() and (tiny_dir / "tokenizer.json").is_file()

    loaded = load_model(str(tiny_dir))

    assert isinstance(loaded, LoadedModel)
    assert type(loaded.model) is LlamaForCausalLM and loaded.model_type == "llama"
    assert loaded.source == str(tiny_dir) and loaded.gguf_file is None and not loaded.model.training
    original = build_model(0)
    assert_same_state(loaded.model, original)
    assert state_dict_sha256(loaded.model) == state_dict_sha256(original)
    assert torch.equal(logits(loaded.model), logits(original))
    text = "the cat sat on a mat"
    assert loaded.tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]

    # training the loaded model in place leaves the directory's weights as they were
    train_step(loaded.model, [Q0])
    assert_same_state(load_model(str(tiny_dir)).model, original)


def test_load_model_casts_to_the_requested_dtype(tiny_dir):
    loaded = load_model(str(tiny_dir), dtype=torch.bfloat16, device="cpu")
    assert {t.dtype for t in loaded.model.state_dict().values()} == {torch.bfloat16}


def test_save_pretrained_dir_never_overwrites(tiny_dir, tokenizer):
    with pytest.raises(FileExistsError, match="not an empty directory"):
        save_pretrained_dir(build_model(0), tokenizer, tiny_dir)


def test_pickle_only_directory_is_refused_without_unpickling(tiny_dir, monkeypatch):
    (tiny_dir / "model.safetensors").unlink()
    (tiny_dir / "pytorch_model.bin").write_bytes(b"junk, not even a pickle")

    def never(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", never)
    with pytest.raises(PickleWeightsRefused, match=r"pickles only \(pytorch_model\.bin\).*never unpickles"):
        load_model(str(tiny_dir))


def test_config_naming_a_pickle_weights_file_is_refused(tiny_dir):
    config = json.loads((tiny_dir / "config.json").read_text())
    config["transformers_weights"] = "adapter_model.bin"
    (tiny_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(PickleWeightsRefused, match="adapter_model.bin"):
        load_model(str(tiny_dir))


def _shard(tiny_dir: Path, shard: str) -> None:
    """Turn the single weights file into a one-shard index naming ``shard``."""
    from safetensors.torch import load_file

    names = list(load_file(tiny_dir / "model.safetensors"))
    (tiny_dir / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {name: shard for name in names}}
    (tiny_dir / "model.safetensors.index.json").write_text(json.dumps(index))


@pytest.mark.parametrize("shard", ["pytorch_model-00001.bin", "weights.pt"])
def test_shard_index_naming_a_pickle_is_refused_before_anything_is_read(tiny_dir, monkeypatch, shard):
    _shard(tiny_dir, shard)
    (tiny_dir / shard).write_bytes(b"not read")

    def never(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", never)
    with pytest.raises(PickleWeightsRefused, match=rf"shard '{shard}' is not a safetensors file.*Nothing was read"):
        load_model(str(tiny_dir))


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd.safetensors", "sub/x.safetensors", ".."])
def test_shard_index_pointing_outside_the_directory_is_refused(tiny_dir, tmp_path, shard):
    (tmp_path / "outside.safetensors").write_bytes((tiny_dir / "model.safetensors").read_bytes())
    _shard(tiny_dir, shard)
    with pytest.raises(ModelSourceError, match="is not a file name inside"):
        load_model(str(tiny_dir))


def test_weights_that_do_not_match_the_config_are_an_error_not_random_layers(tiny_dir):
    """A config that asks for more layers (or other shapes) than the weights hold would leave layers random."""
    config = json.loads((tiny_dir / "config.json").read_text())
    (tiny_dir / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(ModelSourceError, match=r"do not match config\.json: \d+ tensors the config needs are missing "
                                               r"\(model\.layers\.2\."):  # fmt: skip
        load_model(str(tiny_dir))
    (tiny_dir / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 1}))
    with pytest.raises(ModelSourceError, match=r"tensors are not in the model \(model\.layers\.1\."):
        load_model(str(tiny_dir))
    (tiny_dir / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    with pytest.raises(ModelSourceError, match=r"(wrong shape|do not match)"):
        load_model(str(tiny_dir))


def test_unreadable_weights_gguf_and_remote_code_are_model_source_errors(tiny_dir, tmp_path):
    """What transformers raises for a broken source (a SafetensorError, a ValueError) becomes one message saying what
    is wrong with which source, so the CLI can print it as one line."""
    (tiny_dir / "model.safetensors").write_bytes(b"\xff" * 1000)
    with pytest.raises(ModelSourceError, match=r"not a valid safetensors file"):
        load_model(str(tiny_dir))
    gguf = tmp_path / "broken.gguf"
    gguf.write_bytes(b"GARBAGE!" * 100)
    with pytest.raises(ModelSourceError, match=r"broken\.gguf: not a GGUF file"):
        load_model(str(gguf))
    remote = tmp_path / "remote"
    remote.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (remote / name).write_bytes((tiny_dir / name).read_bytes())
    (remote / "model.safetensors").write_bytes(b"unused")
    (remote / "config.json").write_text(json.dumps({"model_type": "somethingelse",
                                                    "auto_map": {"AutoConfig": "code.Config", "AutoModelForCausalLM": "code.Model"}}))  # fmt: skip
    (remote / "code.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(ModelSourceError, match=r"needs code from its own repository.*Nothing was run"):
        load_model(str(remote))


def test_directory_without_config_or_tokenizer_says_what_is_missing(tiny_dir, tmp_path):
    (tiny_dir / "tokenizer.json").unlink()
    (tiny_dir / "tokenizer_config.json").unlink()
    with pytest.raises(ModelSourceError, match="no tokenizer files"):
        load_model(str(tiny_dir))
    (tiny_dir / "config.json").unlink()
    with pytest.raises(ModelSourceError, match="no config.json"):
        load_model(str(tiny_dir))


def test_missing_local_paths_are_reported_as_missing(tmp_path, tiny_dir):
    with pytest.raises(ModelSourceError, match="not a local directory"):
        load_model(str(tmp_path / "nowhere"))
    with pytest.raises(ModelSourceError, match="GGUF file .* not found"):
        load_model(str(tmp_path / "model.gguf"))
    with pytest.raises(ModelSourceError, match="is a file, not a model"):
        load_model(str(tiny_dir / "config.json"))
    with pytest.raises(ModelSourceError, match=r"no GGUF file 'm\.gguf'"):
        load_model(str(tiny_dir), gguf_file="m.gguf")


# --- loading: hub ids -----------------------------------------------------------------------------------------


def test_hub_id_not_in_cache_while_offline_says_download_first(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelSourceError, match=r"hub is offline.*Download the model first") as info:
        load_model("skillgraft-test/not-a-cached-model")
    assert "skillgraft-test/not-a-cached-model" in str(info.value)
    assert "local directory" in str(info.value)


def test_hub_id_is_passed_to_transformers_with_safetensors_only_and_no_remote_code(monkeypatch, tiny_dir):
    """The hub path, checked through the arguments transformers receives (the files come from a local dir)."""
    calls: dict[str, tuple[str, dict]] = {}

    def recorder(what, real):
        def from_pretrained(path, **kwargs):
            calls.setdefault(what, (path, kwargs))  # the first call is ours; transformers makes more inside
            return real(str(tiny_dir), **kwargs)

        return from_pretrained

    for what, cls in [
        ("config", load_module.AutoConfig),
        ("model", load_module.AutoModelForCausalLM),
        ("tokenizer", load_module.AutoTokenizer),
    ]:
        monkeypatch.setattr(cls, "from_pretrained", recorder(what, cls.from_pretrained))

    loaded = load_model("example-org/tiny-llama")

    assert {what: path for what, (path, _) in calls.items()} == dict.fromkeys(calls, "example-org/tiny-llama")
    assert sorted(calls) == ["config", "model", "tokenizer"]
    assert calls["model"][1]["use_safetensors"] is True
    assert all(kwargs["trust_remote_code"] is False for _, kwargs in calls.values())
    assert "gguf_file" not in calls["model"][1]
    assert loaded.source == "example-org/tiny-llama" and loaded.model_type == "llama"


# --- loading: model class -------------------------------------------------------------------------------------


def test_vision_language_configs_pick_the_image_text_to_text_class():
    pick = load_module._model_class
    assert pick(tiny_config(), "s", False) is AutoModelForCausalLM
    assert pick(LlavaConfig(), "s", False) is AutoModelForImageTextToText
    gemma_vlm = Gemma3Config(architectures=["Gemma3ForConditionalGeneration"])
    assert pick(gemma_vlm, "s", False) is AutoModelForImageTextToText
    assert pick(Gemma3TextConfig(), "s", False) is AutoModelForCausalLM


def test_vision_language_directory_loads_with_its_processor(tmp_path):
    tok = build_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    vision = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14
    )
    config = LlavaConfig(
        vision_config=vision, text_config=tiny_config(), image_token_index=tok.convert_tokens_to_ids("<image>")
    )
    torch.manual_seed(0)
    vlm = LlavaForConditionalGeneration(config).eval()
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=14)

    loaded = load_model(str(save_pretrained_dir(vlm, processor, tmp_path / "vlm")))

    assert type(loaded.model) is LlavaForConditionalGeneration and loaded.model_type == "llava"
    assert isinstance(loaded.tokenizer, LlavaProcessor)
    assert_same_state(loaded.model, vlm)


# --- loading: GGUF --------------------------------------------------------------------------------------------


def _permute_for_gguf(weight: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (convert_hf_to_gguf.py's ``permute``), which transformers undoes on load."""
    return (
        weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def write_tiny_gguf(path: Path, model: LlamaForCausalLM) -> Path:
    """A float32 llama GGUF with a byte-level BPE vocabulary of 64 tokens, written with the ``gguf`` package."""
    gguf = pytest.importorskip("gguf")
    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    tokens = ["<s>", "</s>", "<unk>", "<pad>"]
    tokens += [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    tokens += [chr(c) for c in range(ord("A"), ord("W") + 1)] + ["ab"]
    assert len(tokens) == cfg.vocab_size

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_merges(["a b"])
    writer.add_token_types([3, 3, 2, 3] + [1] * (len(tokens) - 4))
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)

    state = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    writer.add_tensor("output.weight", state["lm_head.weight"])
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        q = _permute_for_gguf(state[p + "self_attn.q_proj.weight"], cfg.num_attention_heads)
        k = _permute_for_gguf(state[p + "self_attn.k_proj.weight"], cfg.num_key_value_heads)
        for gguf_name, tensor in [
            ("attn_norm", state[p + "input_layernorm.weight"]),
            ("attn_q", q),
            ("attn_k", k),
            ("attn_v", state[p + "self_attn.v_proj.weight"]),
            ("attn_output", state[p + "self_attn.o_proj.weight"]),
            ("ffn_norm", state[p + "post_attention_layernorm.weight"]),
            ("ffn_gate", state[p + "mlp.gate_proj.weight"]),
            ("ffn_up", state[p + "mlp.up_proj.weight"]),
            ("ffn_down", state[p + "mlp.down_proj.weight"]),
        ]:
            writer.add_tensor(f"blk.{i}.{gguf_name}.weight", tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_file_loads_as_a_dense_model_that_saves_as_safetensors(tmp_path):
    original = build_model(0)
    gguf_path = write_tiny_gguf(tmp_path / "tiny.gguf", original)

    loaded = load_model(str(gguf_path))

    assert loaded.gguf_file == "tiny.gguf" and loaded.model_type == "llama"
    model = loaded.model
    assert getattr(model, "hf_quantizer", None) is None and not model.is_quantized
    assert not hasattr(model.config, "quantization_config")
    assert {t.dtype for t in model.state_dict().values()} == {torch.float32}
    assert_same_state(model, original)  # float32 blocks: the q/k permutation undone exactly
    assert torch.equal(logits(model), logits(original))
    assert loaded.tokenizer.convert_tokens_to_ids(["a", "ab", "</s>"]) == [4, 63, 1]

    # the directory + gguf_file= form loads the same weights
    assert state_dict_sha256(load_model(str(tmp_path), gguf_file="tiny.gguf").model) == state_dict_sha256(model)

    # and it exports as a plain safetensors directory that loads without the GGUF
    exported = save_pretrained_dir(model, loaded.tokenizer, tmp_path / "exported")
    assert not list(exported.glob("*.gguf")) and (exported / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((exported / "config.json").read_text())
    assert_same_state(load_model(str(exported)).model, original)


def test_directory_holding_only_a_gguf_points_at_the_file(tmp_path):
    write_tiny_gguf(tmp_path / "tiny.gguf", build_model(0))
    with pytest.raises(ModelSourceError, match=r"no config\.json.*pass the file itself.*tiny\.gguf"):
        load_model(str(tmp_path))


# --- snapshots ------------------------------------------------------------------------------------------------


def test_snapshot_files_load_back_bit_exactly(tokenizer):
    model = build_model(0)
    train_step(model, [Q0])

    files = snapshot_files(model, tokenizer)

    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    assert all(isinstance(data, bytes) and data for data in files.values())
    loaded = load_snapshot(files, source="store:models/tiny/base")
    assert loaded.source == "store:models/tiny/base"
    assert_same_state(loaded.model, model)
    assert torch.equal(logits(loaded.model), logits(model))


@pytest.mark.parametrize("name", ["../evil.json", "/etc/evil", "a/../../evil", "", "a\\b"])
def test_load_snapshot_refuses_file_names_that_leave_the_snapshot(name):
    with pytest.raises(ModelSourceError, match="not a relative path inside the snapshot"):
        load_snapshot({name: b"{}"})


# --- the core stays orchestrator-free -------------------------------------------------------------------------


def test_import_skillgraft_models_does_not_import_prefect():
    code = (
        "import sys, skillgraft.models\n"
        "loaded = sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.'))\n"
        "print(loaded)\n"
        "sys.exit(1 if loaded else 0)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
