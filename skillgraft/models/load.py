"""Loading a model and its tokenizer from a hub id, a local Hugging Face directory, or a GGUF file.

Safetensors only: a local directory whose weights are pickles (``pytorch_model.bin``, ``*.pt``...) is refused before
any file is opened, and transformers is told ``use_safetensors=True`` for hub ids. GGUF files are dequantised into
a plain dense model (float32 unless ``dtype`` says otherwise), ready to train and to save as safetensors.

Raises:
    ModelSourceError: the source is missing, not a model directory, not in the hub cache while offline, or of a
        model type skillgraft cannot train (the message says which and what to do).
    PickleWeightsRefused: the weights exist only as pickles.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from huggingface_hub import is_offline_mode
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    GgufConfig,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
)

__all__ = ["LoadedModel", "ModelSourceError", "PickleWeightsRefused", "load_model"]

_T = TypeVar("_T")

_SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tekken.json",
)
# A hub id: "name" or "org/name" (no leading '.', '/', '~', at most one '/').
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


class ModelSourceError(ValueError):
    """A model source that cannot be loaded; the message says what is missing and what to do."""


class PickleWeightsRefused(ModelSourceError):
    """The weights exist only as pickles (``.bin``, ``.pt``...), which skillgraft never loads."""


@dataclass
class LoadedModel:
    """A model with its tokenizer (or, for a vision-language model, its processor) and where it came from."""

    model: PreTrainedModel
    tokenizer: Any  # PreTrainedTokenizerBase, or a ProcessorMixin for vision-language models
    source: str
    model_type: str
    gguf_file: str | None = None
    trust_remote_code: bool = False


@dataclass(frozen=True)
class _Location:
    """Where ``from_pretrained`` should look: a local directory or a hub id, and the GGUF file name if any."""

    kind: Literal["dir", "hub"]
    path: str
    gguf_file: str | None


def load_model(
    source: str,
    *,
    gguf_file: str | None = None,
    trust_remote_code: bool = False,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    revision: str | None = None,
) -> LoadedModel:
    """Load a causal LM or a vision-language model, with its tokenizer / processor, in eval mode.

    ``source`` is a hub id (``org/name``, read from the local hub cache when ``HF_HUB_OFFLINE=1``), a local
    directory in Hugging Face layout (``config.json``, ``model.safetensors`` or its index, tokenizer files), or a
    ``.gguf`` file (or a directory / hub id plus ``gguf_file=``). The model class is chosen from the config:
    ``AutoModelForImageTextToText`` for vision-language models, ``AutoModelForCausalLM`` otherwise.

    ``dtype``: ``None`` keeps the checkpoint's own dtype (float32 for GGUF, whose blocks have none). ``device``:
    where the model is moved after loading (CPU when ``None``). ``trust_remote_code`` is passed to transformers
    as given: never turn it on for a source you have not read.
    """
    location = _locate(source, gguf_file)
    if revision is not None and location.kind != "hub":
        raise ModelSourceError(f"{source} is a local path: a revision pins a hub id (org/name) only; drop the revision")
    if location.gguf_file is not None and importlib.util.find_spec("gguf") is None:
        raise ModelSourceError(
            f"{source}: loading a GGUF file needs the 'gguf' package; install it with pip install 'skillgraft[gguf]'"
        )
    if location.kind == "dir" and location.gguf_file is None:
        _check_local_dir(Path(location.path))

    common: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision is not None:
        common["revision"] = revision  # a branch, tag or commit of the hub repo; a commit pins it exactly
    if location.gguf_file is not None:
        common["gguf_file"] = location.gguf_file

    config = _fetch(location, source, "config", lambda: AutoConfig.from_pretrained(location.path, **common))
    _refuse_pickle_named_in_config(config, source)
    model_class = _model_class(config, source, trust_remote_code)

    model_kwargs: dict[str, Any] = {"config": config, **common}
    if location.gguf_file is not None:
        # Dense weights: a model that stays in GGUF blocks can neither train nor be saved as safetensors.
        model_kwargs["quantization_config"] = GgufConfig(dequantize=True)
        model_kwargs["dtype"] = dtype if dtype is not None else torch.float32
    else:
        model_kwargs["use_safetensors"] = True
        if dtype is not None:
            model_kwargs["dtype"] = dtype
    model, info = _fetch(
        location, source, "weights",
        lambda: model_class.from_pretrained(location.path, output_loading_info=True, **model_kwargs),
    )  # fmt: skip
    _refuse_partial_weights(info, source)
    if location.gguf_file is not None:
        _forget_quantizer(model)

    tokenizer_class = AutoProcessor if model_class is AutoModelForImageTextToText else AutoTokenizer
    tokenizer = _fetch(location, source, "tokenizer", lambda: tokenizer_class.from_pretrained(location.path, **common))

    if device is not None:
        model.to(device)
    model.eval()
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        source=source,
        model_type=config.model_type,
        gguf_file=location.gguf_file,
        trust_remote_code=trust_remote_code,
    )


def _locate(source: str, gguf_file: str | None) -> _Location:
    """Decide whether ``source`` is a local directory, a local ``.gguf`` file or a hub id, and check it exists."""
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelSourceError(
                f"{source} is a file, not a model: give the model's directory (config.json, model.safetensors, "
                f"tokenizer files) or a .gguf file"
            )
        if gguf_file is not None and gguf_file != path.name:
            raise ModelSourceError(f"{source} is already a GGUF file; gguf_file={gguf_file!r} would name another")
        return _Location("dir", str(path.parent), path.name)
    if path.is_dir():
        if gguf_file is not None and not (path / gguf_file).is_file():
            found = sorted(p.name for p in path.glob("*.gguf"))
            raise ModelSourceError(f"{source}: no GGUF file {gguf_file!r} in this directory (found: {found or 'none'})")
        return _Location("dir", str(path), gguf_file)
    if source.lower().endswith(".gguf"):
        raise ModelSourceError(f"GGUF file {source} not found (looked at {path.absolute()})")
    if not _HUB_ID.fullmatch(source):
        raise ModelSourceError(
            f"model source {source!r} not found: it is not a local directory ({path.absolute()} does not exist) "
            f"nor a hub id of the form 'org/name'"
        )
    return _Location("hub", source, gguf_file)


def _check_local_dir(path: Path) -> None:
    """Refuse a directory that is not a safetensors Hugging Face model before transformers opens any file."""
    names = sorted(p.name for p in path.iterdir() if p.is_file())
    if "config.json" not in names:
        gguf = [n for n in names if n.lower().endswith(".gguf")]
        hint = f"; to load its GGUF file pass the file itself, e.g. {path / gguf[0]}" if gguf else ""
        raise ModelSourceError(
            f"{path}: no config.json, so not a Hugging Face model directory (expected config.json, "
            f"model.safetensors and tokenizer files){hint}"
        )
    _check_shard_index(path)
    if not any(n in names for n in _SAFE_WEIGHTS):
        if pickles := [n for n in names if n.lower().endswith(_PICKLE_SUFFIXES)]:
            raise PickleWeightsRefused(
                f"{path}: the weights are pickles only ({', '.join(pickles)}), and skillgraft never unpickles "
                f"files (they can run code). Convert them to safetensors on a machine you trust, e.g. load the model "
                f"there with transformers and call model.save_pretrained(dir), then load that directory. "
                f"Nothing was read."
            )
        others = [n for n in names if n.endswith(".safetensors")]
        found = f" (found {', '.join(others)}: rename a single file to model.safetensors)" if others else ""
        raise ModelSourceError(f"{path}: no model.safetensors or model.safetensors.index.json{found}")
    if not any(n in names for n in _TOKENIZER_FILES):
        raise ModelSourceError(
            f"{path}: no tokenizer files (looked for {', '.join(_TOKENIZER_FILES)}); save the tokenizer next to the "
            f"model with tokenizer.save_pretrained(dir)"
        )


_MAX_INDEX_BYTES = 64 * 2**20  # a shard index lists tensor names: even a 400B model's is a few MB


def _check_shard_index(path: Path) -> None:
    """``model.safetensors.index.json`` names the shard files transformers will open: each must be a plain
    ``*.safetensors`` file name inside the directory (no pickle, no path that leaves it), present on disk."""
    index = path / "model.safetensors.index.json"
    if not index.is_file():
        return
    if index.stat().st_size > _MAX_INDEX_BYTES:
        raise ModelSourceError(
            f"{index}: {index.stat().st_size:,} bytes, over the {_MAX_INDEX_BYTES:,} a shard index may be"
        )
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        shards = set(weight_map.values())
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ModelSourceError(
            f"{index}: not a shard index (a JSON object with a 'weight_map' of tensor → file): {e}"
        ) from None
    for shard in sorted(map(str, shards)):
        if "/" in shard or "\\" in shard or shard in ("", ".", "..") or shard.startswith("."):
            raise ModelSourceError(
                f"{index}: shard {shard!r} is not a file name inside {path}; an index may only name *.safetensors "
                f"files next to it. Nothing was read."
            )
        if not shard.endswith(".safetensors"):
            raise PickleWeightsRefused(
                f"{index}: shard {shard!r} is not a safetensors file; skillgraft never unpickles files (they can run "
                f"code). Convert the shards to safetensors. Nothing was read."
            )
        if not (path / shard).is_file():
            raise ModelSourceError(f"{index}: shard {shard!r} is missing from {path}")


def _refuse_partial_weights(info: dict[str, Any], source: str) -> None:
    """Weights that do not match the config would leave layers at their random initialisation (and a hash nobody
    can reproduce): every tensor the model expects must be in the checkpoint, and nothing else."""
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(info.get("unexpected_keys") or [])
    mismatched = sorted(str(m[0]) if isinstance(m, tuple) else str(m) for m in info.get("mismatched_keys") or [])
    if not (missing or unexpected or mismatched):
        return

    def some(names: list[str]) -> str:
        return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")

    parts = [f"{len(missing)} tensors the config needs are missing ({some(missing)})" if missing else "",
             f"{len(unexpected)} tensors are not in the model ({some(unexpected)})" if unexpected else "",
             f"{len(mismatched)} have the wrong shape ({some(mismatched)})" if mismatched else ""]  # fmt: skip
    raise ModelSourceError(
        f"{source}: the weights do not match config.json: {'; '.join(p for p in parts if p)}. Loading it would train "
        f"randomly initialised layers; check that config.json and the weights come from the same checkpoint. "
        f"Nothing was registered."
    )


def _refuse_pickle_named_in_config(config: PreTrainedConfig, source: str) -> None:
    """A config may name its weights file (``transformers_weights``); transformers would then load it as named."""
    named = getattr(config, "transformers_weights", None)
    if named is not None and not str(named).endswith((".safetensors", ".safetensors.index.json")):
        raise PickleWeightsRefused(
            f"{source}: config.json names the weights file {named!r}, which is not safetensors; skillgraft never "
            f"unpickles files. Convert the weights to safetensors and drop 'transformers_weights' from config.json."
        )


def _model_class(config: PreTrainedConfig, source: str, trust_remote_code: bool) -> type:
    """``AutoModelForImageTextToText`` for a vision-language config, ``AutoModelForCausalLM`` for a causal LM."""
    model_type = config.model_type
    architectures = list(getattr(config, "architectures", None) or [])
    vision_language = MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES.get(model_type)
    causal = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    # Some types (gemma3, mllama...) are both: the checkpoint's own architecture decides.
    if vision_language and (causal is None or vision_language in architectures):
        return AutoModelForImageTextToText
    if causal:
        return AutoModelForCausalLM
    auto_map = getattr(config, "auto_map", None) or {}
    if trust_remote_code and "AutoModelForCausalLM" in auto_map:
        return AutoModelForCausalLM
    if trust_remote_code and "AutoModelForImageTextToText" in auto_map:
        return AutoModelForImageTextToText
    raise ModelSourceError(
        f"{source}: model type {model_type!r} (architectures {architectures}) is neither a causal language model nor "
        f"an image-text-to-text model in this transformers; skillgraft fine-tunes those two kinds only"
    )


def _forget_quantizer(model: PreTrainedModel) -> None:
    """Drop what GGUF loading leaves behind, so the (dense) model trains and saves as plain safetensors."""
    for module in model.modules():
        if not isinstance(module, PreTrainedModel):
            continue
        module.hf_quantizer = None
        module.is_quantized = False
        if "quantization_config" in vars(module.config):
            del module.config.quantization_config
        if getattr(module.config, "_is_quantized", False):
            module.config._is_quantized = False


def _fetch(location: _Location, source: str, what: str, load: Callable[[], _T]) -> _T:
    """Run one ``from_pretrained`` step; turn what transformers raises for a bad or missing source into a
    :class:`ModelSourceError` that says what is wrong and what to do."""
    try:
        return load()
    except ModelSourceError:
        raise
    except OSError as err:
        raise _missing(location, source, what, err) from err
    except ValueError as err:
        text = str(err)
        if "trust_remote_code" in text:
            raise ModelSourceError(
                f"{source}: the model needs code from its own repository (config.json's auto_map), and skillgraft "
                f"never runs it unless `trust_remote_code: true` is set in the config for a source you have read. "
                f"Nothing was run."
            ) from None
        if location.gguf_file is not None:
            raise ModelSourceError(
                f"{source}: not a GGUF file transformers can read ({text}). Nothing was registered."
            ) from None
        raise
    except RuntimeError as err:
        if "mismatched_sizes" not in str(err) and "size mismatch" not in str(err):
            raise
        raise ModelSourceError(
            f"{source}: the weights do not match config.json: some tensors have the wrong shape (transformers: {err}). "
            f"Check that config.json and the weights come from the same checkpoint. Nothing was registered."
        ) from None
    except Exception as err:
        if type(err).__name__ != "SafetensorError":
            raise
        raise ModelSourceError(
            f"{source}: the {what} could not be read: not a valid safetensors file ({err}). Nothing was registered."
        ) from None


def _missing(location: _Location, source: str, what: str, err: OSError) -> ModelSourceError:
    if location.kind == "dir":
        return ModelSourceError(f"{source}: could not load the {what} from {location.path}: {err}")
    if is_offline_mode():
        return ModelSourceError(
            f"{source}: the {what} is not in the local Hugging Face cache and the hub is offline "
            f"(HF_HUB_OFFLINE=1). Download the model first (e.g. `hf download {source}`) on a machine with "
            f"access to the hub, or pass a local directory with config.json, model.safetensors and tokenizer "
            f"files. ({err})"
        )
    return ModelSourceError(
        f"{source}: could not fetch the {what} from the Hugging Face hub: {err}. Check the id and your token "
        f"(HF_TOKEN) for gated models, or pass a local directory. skillgraft loads safetensors weights only."
    )
