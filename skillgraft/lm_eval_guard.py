"""lm-evaluation-harness tasks as guard suites: score an in-memory Hugging Face model on one lm-eval task.

The prompt formats and metrics are lm-eval's own: the model is wrapped in lm-eval's ``HFLM`` and run through
``lm_eval.simple_evaluate``; this module only resolves the task, checks it can be scored here and turns lm-eval's
aggregate and logged samples into a :class:`skillgraft.evaluate.TaskScore` (per-document 0/1 of the primary metric,
in document order, so the gate can compare champion and candidate document by document).

Install the extra first: ``pip install "skillgraft[lm-eval]"`` (lm-eval 0.4.10 - 0.4.x: older releases import
``transformers.AutoModelForVision2Seq``, which transformers 5 removed).

Where the Hugging Face Hub is reachable (or the dataset is already in the local ``datasets`` cache), guard with a
registered task by name::

    from skillgraft.lm_eval_guard import describe_task, score

    describe_task("arc_easy")        # {'task': 'arc_easy', 'output_type': 'multiple_choice', 'metric': 'acc',
                                     #  'docs': 2376, 'config_sha256': '...', ...}
    s = score(model, tokenizer, "hellaswag", limit=500)     # TaskScore(metric='acc', score=..., n=500, correct=[...])
    s = score(model, tokenizer, "mmlu_high_school_physics")  # one MMLU subject; the group "mmlu" is refused
    s.score, sum(s.correct) / s.n    # the same number

Offline (``HF_DATASETS_OFFLINE=1``, nothing cached), write a local task YAML over a local file and point
``include_path`` at it (a directory of YAMLs, or one YAML file)::

    # guards/capitals.yaml
    task: capitals
    dataset_path: json
    dataset_kwargs:
      data_files:
        test: /data/guards/capitals.jsonl     # {"question": ..., "choices": [...], "label": 0} per line
    test_split: test
    output_type: multiple_choice
    doc_to_text: "Question: {{question}}\\nAnswer:"
    doc_to_choice: "{{choices}}"
    doc_to_target: label
    metric_list:
      - metric: acc
        aggregation: mean
        higher_is_better: true

    score(model, tokenizer, "capitals", include_path="guards/")

Scoring is deterministic: zero-shot unless the task's config sets few-shot (then lm-eval's seeded sampler),
generation tasks are forced to greedy decoding, and lm-eval's seeding of ``random``/``numpy``/``torch`` is undone
afterwards so the caller's random state is as it was. No ``trust_remote_code``, no network of its own: a hub dataset
is read through the ordinary ``datasets`` cache (filled when the hub is reachable); a dataset built from local files is
prepared in a temporary directory that is removed afterwards. The model's per-module train/eval mode and its device
are restored, and lm-eval works on a copy of the tokenizer (it may set a pad token).

Only tasks whose primary metric is a mean of per-document 0/1 values can be guards (``acc`` of ``multiple_choice``
and ``loglikelihood`` tasks, ``exact_match`` of ``generate_until`` tasks); perplexity-only tasks
(``loglikelihood_rolling``) and corpus-level metrics (BLEU, F1 over the corpus) are refused with :class:`LmEvalError`.
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import inspect
import json
import os
import random
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from skillgraft.evaluate import TaskScore

__all__ = ["LmEvalError", "describe_task", "score"]

INSTALL_HINT = 'install the extra: pip install "skillgraft[lm-eval]"'
# `datasets` builders that read local files: their prepared Arrow cache goes to a temp dir, never the user's cache.
_FILE_BUILDERS = {"json", "csv", "parquet", "text", "arrow", "pandas"}
_SUPPORTED_OUTPUTS = ("multiple_choice", "loglikelihood", "generate_until")
_MAX_SAMPLES = 5


class LmEvalError(ValueError):
    """An lm-eval task that cannot be described or scored here; the message says why and what to do."""


# --------------------------------------------------------------------------------------------------- public API


def describe_task(task: str, *, include_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """What a guard on ``task`` would measure, without loading a model.

    ``task`` is a name in lm-eval's registry, or a task defined in the YAML file(s) at ``include_path`` (a directory,
    searched recursively, or one YAML file). Loads the task's eval split (needs the dataset: see the module doc).

    Returns ``{"task", "output_type", "metric", "docs", "config_sha256", "docs_sha256", "lm_eval_version"}``:
    ``metric`` is the primary metric lm-eval reports for it (the first higher-is-better, mean-aggregated metric of
    the task's metric list), ``docs`` the number of eval documents, ``config_sha256`` a hash of the resolved task
    config (prompt templates, metric list, splits, data file paths, source code of any ``!function`` hooks; not the
    YAML's own location), and ``docs_sha256`` a hash of the eval documents' content, so a registration can tell when
    either changed.
    """
    lm_eval = _import_lm_eval()
    with _random_state_restored(), _loaded_task(task, include_path) as (task_obj, _tm):
        output_type, metric, _filter = _primary(task_obj, task)
        docs = list(task_obj.eval_docs)
        return {
            "task": task,
            "output_type": output_type,
            "metric": metric,
            "docs": len(docs),
            "config_sha256": _config_sha256(task_obj),
            "docs_sha256": _sha256_json(docs),
            "lm_eval_version": getattr(lm_eval, "__version__", "unknown"),
        }


def score(
    model: Any,
    tokenizer: Any,
    task: str,
    *,
    include_path: str | os.PathLike | None = None,
    limit: int | None = None,
    batch_size: int = 8,
) -> TaskScore:
    """Score an already-loaded causal LM on one lm-eval task, with lm-eval's prompts and metrics.

    ``limit`` scores the first ``limit`` eval documents only (lm-eval's ``limit``; a whole number here). Returns a
    TaskScore whose ``score`` is lm-eval's aggregate of the primary metric, ``n`` the documents scored, ``correct``
    the per-document 0/1 values of that metric in document order (their mean is ``score``) and ``samples`` up to five
    ``(prompt, prediction, target)`` strings.
    """
    lm_eval = _import_lm_eval()
    from lm_eval.models.huggingface import HFLM

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise LmEvalError(f"limit must be a whole number of documents >= 1 or None, got {limit!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise LmEvalError(f"batch_size must be an int >= 1, got {batch_size!r}")

    with _random_state_restored(), _loaded_task(task, include_path) as (task_obj, tm):
        output_type, metric, filter_name = _primary(task_obj, task)
        task_name = task_obj.task_name
        gen_kwargs = {"do_sample": False, "temperature": 0.0} if output_type == "generate_until" else None
        with _model_state_restored(model):
            lm = HFLM(pretrained=model, tokenizer=copy.deepcopy(tokenizer), batch_size=batch_size)
            results = lm_eval.simple_evaluate(
                model=lm,
                tasks=[task_obj],
                task_manager=tm,
                limit=limit,
                log_samples=True,
                bootstrap_iters=0,
                gen_kwargs=gen_kwargs,
                write_out=False,
                use_cache=None,
                cache_requests=False,
                confirm_run_unsafe_code=False,
            )
    if results is None:  # only a non-zero rank of a distributed run gets None; we never start one
        raise LmEvalError(f"lm-eval returned no results for task {task!r}")

    key = f"{metric},{filter_name}"
    task_results = results["results"].get(task_name, {})
    if key not in task_results:
        raise LmEvalError(
            f"lm-eval reported no {key!r} for task {task!r} (reported: {sorted(task_results)}); "
            "the task's metric_list or filter_list may not match what it computes"
        )
    aggregate = float(task_results[key])

    logged = sorted(
        (s for s in results.get("samples", {}).get(task_name, []) if s.get("filter") == filter_name),
        key=lambda s: s["doc_id"],
    )
    correct: list[int] = []
    for s in logged:
        value = s.get(metric)
        if isinstance(value, bool) or value in (0, 1, 0.0, 1.0):
            correct.append(int(value))
        else:
            raise LmEvalError(
                f"task {task!r}: metric {metric!r} is {value!r} for document {s['doc_id']}, not 0/1; "
                "a guard needs a per-document pass/fail metric (acc, exact_match)"
            )
    expected = results.get("n-samples", {}).get(task_name, {}).get("effective")
    if expected is not None and len(correct) != expected:
        raise LmEvalError(f"task {task!r}: lm-eval logged {len(correct)} documents but scored {expected}")
    if correct and abs(sum(correct) / len(correct) - aggregate) > 1e-9:
        raise LmEvalError(
            f"task {task!r}: lm-eval's {metric} = {aggregate} is not the mean of its per-document values "
            f"({sum(correct)}/{len(correct)}); refusing a guard whose total and examples disagree"
        )
    return TaskScore(
        task=task,
        metric=metric,
        score=aggregate,
        n=len(correct),
        correct=correct,
        samples=[_sample_strings(s, output_type, metric) for s in logged[:_MAX_SAMPLES]],
    )


# --------------------------------------------------------------------------------------------------- task loading


def _import_lm_eval():
    try:
        import lm_eval  # noqa: F401
        import lm_eval.tasks  # noqa: F401
        from lm_eval.models.huggingface import HFLM  # noqa: F401
    except ImportError as err:
        raise LmEvalError(f"lm-eval (lm-evaluation-harness) is not importable ({err}); {INSTALL_HINT}") from err
    return lm_eval


@functools.lru_cache(maxsize=1)
def _default_manager():
    """lm-eval's own registry (indexing its ~15k task YAMLs takes seconds: once per process)."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


def _manager_for(path: Path, files: list[Path] | None = None):
    from lm_eval.tasks import TaskManager

    try:
        return TaskManager(include_path=str(path), include_defaults=False)
    except Exception as err:  # noqa: BLE001 - lm-eval 0.4.10/0.4.11 raise on an unreadable YAML (0.4.12+ skip it)
        problems = _yaml_problems(files if files is not None else sorted(path.rglob("*.y*ml")))
        detail = "; ".join(problems) if problems else f"{type(err).__name__}: {err}"
        raise LmEvalError(f"lm-eval could not index the task YAMLs under {str(path)!r}: {detail}") from err


@contextmanager
def _loaded_task(task: str, include_path: str | os.PathLike | None) -> Iterator[tuple[Any, Any]]:
    """Yield (Task object, TaskManager) for ``task``; a local-file dataset is prepared in a temp dir removed after."""
    if not isinstance(task, str) or not task.strip():
        raise LmEvalError(f"task must be a non-empty lm-eval task name, got {task!r}")
    with tempfile.TemporaryDirectory(prefix="skillgraft-lm-eval-") as tmp:
        tmp_path = Path(tmp)
        tm, entry = _resolve(task, include_path, tmp_path)
        cfg = _entry_cfg(entry)
        if _entry_kind(entry) in ("GROUP", "TAG"):
            members = _group_members(tm, task, entry)
            shown = ", ".join(members[:8]) + (", ..." if len(members) > 8 else "")
            raise LmEvalError(
                f"{task!r} is an lm-eval group/tag of {len(members)} members ({shown}); a guard scores one task: "
                "register each leaf task you want to guard (e.g. arc_easy, or mmlu_astronomy for one MMLU subject)"
            )
        yaml_path = _entry_yaml(entry)
        spec: Any = task
        if yaml_path is not None and _is_local_file_dataset(cfg):
            # Same task, same config, but the Arrow cache of the local files goes under tmp: a YAML that includes
            # the original and adds only dataset_kwargs.cache_dir (lm-eval's own `include:` merge).
            derived_dir = tmp_path / "task"
            derived_dir.mkdir()
            kwargs = dict(cfg.get("dataset_kwargs") or {})
            kwargs["cache_dir"] = str(tmp_path / "datasets-cache")
            (derived_dir / "task.yaml").write_text(
                json.dumps({"include": str(Path(yaml_path).resolve()), "dataset_kwargs": kwargs}), encoding="utf-8"
            )
            tm = _manager_for(derived_dir)
        try:
            loaded = _load(tm, spec)
        except LmEvalError:
            raise
        except Exception as err:  # noqa: BLE001 - lm-eval/datasets raise many types; translate the known ones
            raise _load_error(task, cfg, err) from err
        tasks = list(loaded.values())
        if len(tasks) != 1:
            raise LmEvalError(f"{task!r} resolved to {len(tasks)} lm-eval tasks ({sorted(loaded)}); pass one task")
        task_obj = tasks[0]
        output_type = task_obj.get_config("output_type") if hasattr(task_obj, "get_config") else None
        if output_type not in _SUPPORTED_OUTPUTS:
            raise LmEvalError(
                f"task {task!r} has output_type {output_type!r}; a guard supports {list(_SUPPORTED_OUTPUTS)} "
                "(perplexity tasks have no per-document pass/fail)"
            )
        yield task_obj, tm


def _resolve(task: str, include_path: str | os.PathLike | None, tmp: Path) -> tuple[Any, Any]:
    """(TaskManager, index entry) for ``task``: from include_path first, then lm-eval's registry."""
    local_names: list[str] = []
    problems: list[str] = []
    if include_path is not None:
        path = Path(include_path).expanduser()
        if not path.exists():
            raise LmEvalError(
                f"include_path {str(path)!r} does not exist; pass the directory (or YAML file) holding the task "
                f"YAML for {task!r}"
            )
        if path.is_file():
            if path.suffix not in (".yaml", ".yml"):
                raise LmEvalError(f"include_path {str(path)!r} is not a .yaml task file or a directory of them")
            # lm-eval indexes directories only: a one-line YAML in a temp dir that includes the file.
            wrapper = tmp / "include"
            wrapper.mkdir()
            (wrapper / "task.yaml").write_text(json.dumps({"include": str(path.resolve())}), encoding="utf-8")
            scan_root, files = wrapper, [path]
        else:
            scan_root, files = path, sorted([*path.rglob("*.yaml"), *path.rglob("*.yml")])
        tm = _manager_for(scan_root, files)
        index = _task_index(tm)
        if task in index:
            return tm, index[task]
        local_names = sorted(index)
        problems = _yaml_problems(files)

    tm = _default_manager()
    index = _task_index(tm)
    if task in index:
        return tm, index[task]

    near = difflib.get_close_matches(task, local_names + list(index), n=6, cutoff=0.6)
    where = "lm-eval's registry"
    if include_path is not None:
        where = f"{str(include_path)!r} (tasks there: {local_names or 'none'}) nor in lm-eval's registry"
    msg = f"unknown lm-eval task {task!r}: not in {where}"
    msg += f"; near names: {near}" if near else "; no near names (list them with `lm-eval ls tasks`)"
    if problems:
        msg += "; YAML files that lm-eval could not read: " + "; ".join(problems)
    raise LmEvalError(msg)


def _yaml_problems(files: list[Path]) -> list[str]:
    """Why files under include_path define no task (lm-eval 0.4.12+ skips unreadable YAMLs silently)."""
    problems = []
    for f in files[:50]:
        try:
            cfg = _read_yaml_loosely(f)
        except Exception as err:  # noqa: BLE001
            problems.append(f"{f.name}: " + " ".join(line.strip() for line in str(err).splitlines()))
            continue
        if not isinstance(cfg, dict):
            problems.append(f"{f.name}: not a mapping")
        elif not ({"task", "group", "class"} & set(cfg)):
            problems.append(f"{f.name}: no 'task' key")
    return problems


def _task_index(tm: Any) -> dict[str, Any]:
    return dict(tm.task_index)


# lm-eval 0.4.12+ indexes tasks as `Entry` dataclasses (kind, yaml_path, cfg); 0.4.10/0.4.11 as plain dicts
# ({"type": "task" | "group" | "tag" | "python_task", "yaml_path": path or -1}).


def _entry_kind(entry: Any) -> str:
    kind = getattr(entry, "kind", None)
    if kind is not None:
        return str(getattr(kind, "name", kind)).upper()
    return str(entry.get("type", "task")).upper() if isinstance(entry, dict) else "TASK"


def _entry_yaml(entry: Any) -> str | None:
    path = entry.get("yaml_path") if isinstance(entry, dict) else getattr(entry, "yaml_path", None)
    return None if path in (None, -1) else str(path)


def _entry_cfg(entry: Any) -> dict[str, Any]:
    cfg = None if isinstance(entry, dict) else getattr(entry, "cfg", None)
    if cfg is None and _entry_yaml(entry) is not None:
        try:
            cfg = _read_yaml_loosely(Path(_entry_yaml(entry)))
        except Exception:  # noqa: BLE001 - only used for hints and the local-file check
            cfg = None
    return cfg if isinstance(cfg, dict) else {}


def _read_yaml_loosely(path: Path, _depth: int = 0) -> Any:
    """A task YAML with its `include:`s merged and `!function` tags read as None (lm-eval's own merge rule)."""
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    with path.open(encoding="utf-8") as fh:  # a file object: YAML errors name the file and line
        cfg = yaml.load(fh, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    if not isinstance(cfg, dict) or "include" not in cfg or _depth > 8:
        return cfg
    merged: dict[str, Any] = {}
    includes = cfg.pop("include")
    for inc in includes if isinstance(includes, list) else [includes]:
        inc_path = Path(inc) if Path(inc).is_absolute() else path.parent / inc
        sub = _read_yaml_loosely(inc_path, _depth + 1)
        if isinstance(sub, dict):
            merged.update(sub)
    merged.update(cfg)
    return merged


def _group_members(tm: Any, task: str, entry: Any) -> list[str]:
    tags = getattr(entry, "tags", None)
    if _entry_kind(entry) == "TAG" and tags:
        return sorted(tags)
    task_list = _entry_cfg(entry).get("task")
    if isinstance(task_list, list):
        return [t if isinstance(t, str) else str(t.get("task") or t.get("group")) for t in task_list]
    return [n for n in getattr(tm, "all_subtasks", []) if n.startswith(task + "_")][:50]


def _load(tm: Any, spec: Any) -> dict[str, Any]:
    """{task name: Task} for one spec, with the API this lm-eval has (older than 0.4.10 cannot import its HF wrapper
    under transformers 5)."""
    if hasattr(tm, "load"):  # lm-eval >= 0.4.12
        return dict(tm.load([spec])["tasks"])
    from lm_eval.tasks import get_task_dict  # lm-eval 0.4.10 / 0.4.11: nested {name or group: Task or {...}}

    flat: dict[str, Any] = {}

    def walk(d: dict) -> None:
        for key, value in d.items():
            if isinstance(value, dict):
                walk(value)
            elif isinstance(value, tuple):  # (group, task) pairs in some 0.4.x releases
                if value[1] is not None:
                    flat[str(key)] = value[1]
            elif value is not None:
                flat[str(key)] = value

    walk(get_task_dict([spec], tm))
    return flat


def _is_local_file_dataset(cfg: dict[str, Any]) -> bool:
    if str(cfg.get("dataset_path", "")).lower() not in _FILE_BUILDERS:
        return False
    kwargs = cfg.get("dataset_kwargs") or {}
    if not isinstance(kwargs, dict) or "cache_dir" in kwargs:
        return False
    files = kwargs.get("data_files")
    flat: list[Any] = []
    if isinstance(files, dict):
        for v in files.values():
            flat.extend(v if isinstance(v, list) else [v])
    elif isinstance(files, list):
        flat = files
    elif files is not None:
        flat = [files]
    return bool(flat) and all(isinstance(f, str) and "://" not in f for f in flat)


def _load_error(task: str, cfg: dict[str, Any], err: Exception) -> LmEvalError:
    text = f"{type(err).__name__}: {err}"
    dataset = cfg.get("dataset_path")
    offline_vars = [v for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE") if _truthy(os.environ.get(v))]
    if isinstance(err, FileNotFoundError) and str(dataset or "").lower() in _FILE_BUILDERS:
        return LmEvalError(
            f"task {task!r}: a local data file it names is missing ({text}); data_files paths are read as written "
            "(relative ones from the current directory, not from the YAML's)"
        )
    hubby = isinstance(err, ConnectionError) or any(
        s in text for s in ("OfflineModeIsEnabled", "Couldn't reach", "offline mode", "on the Hub")
    )
    if hubby or (offline_vars and type(err).__name__ in ("DatasetNotFoundError", "FileNotFoundError")):
        state = f"with {'='.join([offline_vars[0], '1'])}" if offline_vars else "(the hub could not be reached)"
        return LmEvalError(
            f"task {task!r} is not scoreable offline: it reads dataset {dataset!r} from the Hugging Face Hub, which "
            f"is not available {state} and the dataset is not in the local datasets cache ({text}). Either run it "
            "once where the hub is reachable (the datasets cache keeps it), or write a local task YAML over a local "
            "file (dataset_path: json, dataset_kwargs: {data_files: ...}) and pass include_path"
        )
    if isinstance(err, FileNotFoundError):
        return LmEvalError(f"task {task!r}: a data file it names is missing ({text})")
    if isinstance(err, KeyError) and "not a registered" in text:
        return LmEvalError(f"unknown lm-eval task {task!r} ({text})")
    return LmEvalError(f"task {task!r} could not be loaded by lm-eval: {text}")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------------------------------- metrics


def _primary(task_obj: Any, task: str) -> tuple[str, str, str]:
    """(output_type, primary metric, first filter name): the metric lm-eval lists first that is higher-is-better and
    mean-aggregated (for ``loglikelihood`` tasks that skips perplexity and lands on acc)."""
    from lm_eval.api.registry import get_aggregation

    output_type = task_obj.get_config("output_type")
    mean = get_aggregation("mean")
    aggregation = task_obj.aggregation()
    higher = task_obj.higher_is_better()
    metric = next(
        (m for m, agg in aggregation.items() if higher.get(m) is True and agg is mean),
        None,
    )
    if metric is None:
        raise LmEvalError(
            f"task {task!r} ({output_type}) reports {list(aggregation)}, none of them a higher-is-better mean of "
            "per-document values: it cannot be a pass/fail guard (use an acc or exact_match task)"
        )
    filters = task_obj.get_config("filter_list")
    filter_name = filters[0]["name"] if filters else "none"
    return output_type, metric, filter_name


def _sample_strings(s: dict[str, Any], output_type: str, metric: str) -> tuple[str, str, str]:
    args = [tuple(a) for a in s.get("arguments", [])]
    resps = s.get("filtered_resps", [])
    target = s.get("target")
    prompt = str(args[0][0]) if args else ""
    if output_type == "multiple_choice" and args:
        lls = [float(r[0]) if isinstance(r, (list, tuple)) else float(r) for r in resps]
        conts = [str(a[1]) for a in args]
        multiple_input = len({a[0] for a in args}) > 1 and len(set(conts)) == 1
        options = [str(a[0]) for a in args] if multiple_input else conts
        if metric == "acc_norm":
            lls = [ll / max(len(o), 1) for ll, o in zip(lls, options, strict=False)]
        best = max(range(len(lls)), key=lls.__getitem__) if lls else 0
        prediction = options[best].strip() if options else ""
        if isinstance(target, int) and 0 <= target < len(options):
            target_text = options[target].strip()
        elif isinstance(target, list):
            target_text = " | ".join(options[t].strip() if isinstance(t, int) else str(t) for t in target)
        else:
            target_text = str(target)
        if multiple_input:
            prompt = "(one context per choice)"
        return prompt, prediction, target_text
    if output_type == "loglikelihood" and args:
        greedy = bool(resps[0][1]) if resps and isinstance(resps[0], (list, tuple)) else False
        verdict = "greedy decoding gives the target" if greedy else "greedy decoding does not give the target"
        return prompt, verdict, str(args[0][1])
    prediction = resps[0] if resps else ""
    if isinstance(prediction, list):
        prediction = prediction[0] if prediction else ""
    return prompt, str(prediction), str(target)


# --------------------------------------------------------------------------------------------------- hashing


def _stable(value: Any) -> Any:
    if callable(value):
        try:
            return inspect.getsource(value)
        except (OSError, TypeError):
            return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', type(value).__name__)}"
    if isinstance(value, (set, frozenset)):
        return sorted(map(str, value))
    return re.sub(r" at 0x[0-9a-fA-F]+", "", str(value))


def _sha256_json(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=_stable, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _config_sha256(task_obj: Any) -> str:
    cfg = copy.deepcopy(task_obj.dump_config())
    meta = cfg.get("metadata")
    if isinstance(meta, dict):  # where the YAML lives and run-time extras are not the task's content
        meta.pop("config_source", None)
    kwargs = cfg.get("dataset_kwargs")
    if isinstance(kwargs, dict):
        kwargs.pop("cache_dir", None)
    return _sha256_json(cfg)


# --------------------------------------------------------------------------------------------------- state


@contextmanager
def _model_state_restored(model: Any) -> Iterator[None]:
    """lm-eval calls ``model.eval()``; put every module's train/eval mode and the parameters' device back."""
    import torch

    modes = [(m, m.training) for m in model.modules()] if isinstance(model, torch.nn.Module) else []
    first = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
    device = first.device if first is not None else None
    try:
        yield
    finally:
        if device is not None:
            now = next(iter(model.parameters()), None)
            if now is not None and now.device != device:
                model.to(device)
        for module, training in modes:
            module.training = training


@contextmanager
def _random_state_restored() -> Iterator[None]:
    """simple_evaluate seeds random, numpy and torch (for its own reproducibility), and every read of
    ``ConfigurableTask.task_name`` draws from ``random`` (lm-eval 0.4.13 evaluates ``random_task_id()`` as the
    getattr default): give the caller its random state back."""
    import numpy as np
    import torch

    py_state = random.getstate()
    np_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
