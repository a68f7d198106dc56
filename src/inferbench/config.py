"""Load, default and validate the workflow config.

The JSON schema (workflow/schemas/config.schema.yaml) checks types and keys; this
module adds what a schema cannot say (duplicate backend names, the stopping rule's
bounds, each backend's own options, the model's maximum sequence length) and
derives the per-job settings that the rules pass as params. Nothing here imports
torch or onnxruntime: the Snakefile imports it at parse time.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inferbench.naming import safe_name
from inferbench.spec import BackendSpec, ConfigError

if TYPE_CHECKING:
    import jsonschema

# jsonschema and yaml are imported where a config is read or validated: every job
# process imports this module (for config_hash, the settings), and most never
# validate a config; the two cost about 70 ms per process.

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
ARCHITECTURES_DIR = Path(__file__).resolve().parent / "architectures"
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

DEFAULT_PARITY: dict[str, dict[str, float]] = {
    "fp32": {"max_abs": 1e-3, "min_agreement": 1.0},
    "fp16": {"max_abs": 5e-2, "min_agreement": 0.95},
    "bf16": {"max_abs": 1e-1, "min_agreement": 0.9},
    "int8": {"max_abs": 2e-1, "min_agreement": 0.9},
    # Dynamic FP8 (e4m3) activations and weights in every encoder GEMM.
    "fp8": {"max_abs": 2e-1, "min_agreement": 0.9},
}


def load_schema() -> dict[str, Any]:
    import yaml

    with SCHEMA_PATH.open() as fh:
        return yaml.safe_load(fh)


def _key_path(error: jsonschema.ValidationError) -> str:
    parts: list[str] = []
    for item in error.absolute_path:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    key = _key_path(error)
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        unexpected = sorted(set(error.instance) - set(allowed))
        where = key if key != "<top level>" else "the top level"
        return (
            f"unknown config key(s) {unexpected} in {where}; "
            f"allowed keys: {', '.join(allowed)}"
        )
    if error.validator == "enum":
        return f"config key '{key}': {error.instance!r} is not one of {error.validator_value}"
    if error.validator == "required":
        return f"config key '{key}': {error.message}"
    if error.validator in ("oneOf", "anyOf") and error.context:
        # e.g. `target`: a name or a list of names; report the closest alternative
        # (the branch of the instance's type; a type mismatch only when none fits)
        fitting = [e for e in error.context if e.validator != "type"] or error.context
        from jsonschema.exceptions import best_match

        closest = best_match(fitting)
        hint = _allowed(closest.schema) if isinstance(closest.schema, dict) else ""
        return f"config key '{_key_path(closest)}': {closest.message}{hint}"
    return f"config key '{key}': {error.message}{_allowed(schema)}"


_TYPE_WORDS = {"integer": "integer", "number": "number", "string": "string",
               "boolean": "true/false", "array": "list", "object": "mapping"}


def _allowed(schema: Mapping[str, Any]) -> str:
    """'; allowed: ...' from a schema node (type, bounds, pattern), or ''."""
    text = _allowed_text(schema)
    return f"; allowed: {text}" if text else ""


def _allowed_text(schema: Mapping[str, Any]) -> str:
    if "enum" in schema:
        return f"one of {schema['enum']}"
    kind = schema.get("type")
    if kind == "array":
        found = schema.get("items")
        items: Mapping[str, Any] = found if isinstance(found, dict) else {}
        size = f"at least {schema['minItems']} " if schema.get("minItems") else ""
        unique = "unique " if schema.get("uniqueItems") else ""
        return f"a list of {size}{unique}{_allowed_text(items) or 'values'}"
    if not isinstance(kind, str):
        return ""
    parts = [_TYPE_WORDS.get(kind, kind)]
    for word, op in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<=")):
        if word in schema:
            parts.append(f"{op} {schema[word]}")
    if "pattern" in schema:
        parts.append(f"matching {schema['pattern']} (letters, digits, '.', '_', '-')")
    return " ".join(parts)


def _fill_defaults(instance: Any, schema: Mapping[str, Any]) -> None:
    """Set schema defaults on objects and array items, recursively."""
    if isinstance(instance, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in instance and "default" in sub:
                instance[key] = copy.deepcopy(sub["default"])
            if key in instance:
                _fill_defaults(instance[key], sub)
        for sub in schema.get("patternProperties", {}).values():
            for value in instance.values():
                _fill_defaults(value, sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, value in instance.items():
                if key not in schema.get("properties", {}):
                    _fill_defaults(value, extra)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            _fill_defaults(item, schema["items"])


def builtin_architecture(model_id: str) -> dict[str, Any] | None:
    """Config of a model id whose architecture ships with inferbench, if any."""
    path = ARCHITECTURES_DIR / f"{model_id.split('/')[-1]}.json"
    if path.is_file():
        return json.loads(path.read_text())
    return None


def _model_max_positions(model: Mapping[str, Any]) -> int | None:
    """max_position_embeddings when knowable without a download."""
    cfg: Mapping[str, Any] | None = None
    if model["source"] == "architecture":
        cfg = model.get("architecture") or builtin_architecture(model.get("id", ""))
        base = builtin_architecture(model.get("id", "")) or {}
        if model.get("architecture"):
            cfg = {**base, **model["architecture"]}
    elif model["source"] == "local" and model.get("path"):
        config_json = Path(model["path"]) / "config.json"
        if config_json.is_file():
            cfg = json.loads(config_json.read_text())
    if not cfg:
        return None
    value = cfg.get("max_position_embeddings")
    return int(value) if isinstance(value, int) else None


def validate_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Return a defaulted copy of ``raw`` or raise ConfigError naming the bad key."""
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"the config is a YAML {_yaml_kind(raw)}, not a mapping of keys; it must look "
            "like `model: {...}`, `seq_len: 128`, `batch_sizes: [1, 4]`, `backends: [...]` "
            "(see workflow/schemas/config.schema.yaml)")
    import jsonschema

    config = copy.deepcopy(dict(raw))
    schema = load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("; ".join(_describe(e) for e in errors))
    chose_baseline = "baseline" in (config.get("report") or {})
    _fill_defaults(config, schema)
    _check_semantics(config)
    _resolve_baseline(config, chose_baseline)
    return config


def _resolve_baseline(config: dict[str, Any], chosen: bool) -> None:
    """``report.baseline`` names a backend of this config, or is null (no speedups).
    A name set by the user must be one; left out, the schema's default names the
    default config's eager backend, so a config of one's own compares with its own FP32
    eager PyTorch backend, else its first FP32 backend, whatever it called them."""
    backends = config["backends"]
    names = [entry["name"] for entry in backends]
    report = config["report"]
    if report["baseline"] is None or report["baseline"] in names:
        return
    if chosen:
        raise ConfigError(
            f"config key 'report.baseline': {report['baseline']!r} is not a backend of this "
            f"config; allowed: {', '.join(names)}, or null for no speedups")
    fp32 = [entry for entry in backends if entry["precision"] == "fp32"]
    eager = [entry for entry in fp32 if entry["kind"] == "torch-eager"]
    report["baseline"] = (eager or fp32)[0]["name"] if fp32 else None


def _check_semantics(config: dict[str, Any]) -> None:
    from inferbench.backends import registry  # light: backends import runtimes lazily

    results_dir = str(config.get("results_dir", "results"))
    if not results_dir or any(c in results_dir for c in "{}\n\0"):
        # Braces would be read as Snakemake wildcards; other characters are quoted.
        raise ConfigError(
            f"config key 'results_dir': {results_dir!r} is not usable; allowed: a non-empty "
            "path without '{', '}', newlines or NUL")
    model = config["model"]
    source = model["source"]
    if source in ("hub", "architecture") and not model.get("id"):
        raise ConfigError(f"config key 'model.id' is required when model.source is {source!r}")
    if (source == "architecture" and not model.get("architecture")
            and builtin_architecture(model["id"]) is None):
        known = sorted(p.stem for p in ARCHITECTURES_DIR.glob("*.json"))
        raise ConfigError(
            f"config key 'model.architecture' is required: no built-in architecture for "
            f"{model['id']!r} (built in: {', '.join(known)})"
        )
    if source == "architecture":
        _check_architecture(model)
    if source == "local" and not model.get("path"):
        raise ConfigError("config key 'model.path' is required when model.source is 'local'")
    model.setdefault("name", safe_name(model.get("id") or Path(model.get("path", "model")).name))

    max_positions = _model_max_positions(model)
    if max_positions is not None and config["seq_len"] > max_positions:
        raise ConfigError(
            f"config key 'seq_len': {config['seq_len']} exceeds the model's maximum "
            f"(max_position_embeddings = {max_positions}); allowed: 1..{max_positions}"
        )

    policy = config["measurement"]
    if policy["min_duration_s"] > policy["max_duration_s"]:
        raise ConfigError(
            f"config key 'measurement.min_duration_s' ({policy['min_duration_s']}) is above "
            f"'measurement.max_duration_s' ({policy['max_duration_s']}); it must be at most the cap"
        )

    seen: set[str] = set()
    kinds = registry.kinds()
    for index, entry in enumerate(config["backends"]):
        name = entry["name"]
        if name in seen:
            raise ConfigError(
                f"config key 'backends[{index}].name': duplicate backend {name!r}; every "
                f"backend needs its own name (names so far: {', '.join(sorted(seen))})")
        seen.add(name)
        if entry["kind"] not in kinds:
            raise ConfigError(
                f"config key 'backends[{index}].kind': unknown backend {entry['kind']!r}; "
                f"allowed: {', '.join(sorted(kinds))}"
            )
        extra = sorted(set(entry.get("batch_sizes") or []) - set(config["batch_sizes"]))
        if extra:
            raise ConfigError(
                f"config key 'backends[{index}].batch_sizes' ({name}): {extra} not in "
                f"'batch_sizes'; allowed: a subset of {config['batch_sizes']}")
        spec = BackendSpec.from_entry(entry)
        try:
            registry.get(spec.kind).check_spec(spec)
        except ConfigError as exc:
            raise ConfigError(f"config key 'backends[{index}]' ({name}): {exc}") from None

    parity = {**DEFAULT_PARITY}
    for precision, tolerances in (config.get("parity") or {}).items():
        parity[precision] = {**DEFAULT_PARITY.get(precision, {}), **tolerances}
    config["parity"] = parity
    _check_targets(config)
    baseline_run = (config.get("compare") or {}).get("baseline")
    if baseline_run is not None and not Path(baseline_run).is_dir():
        raise ConfigError(
            f"config key 'compare.baseline': {baseline_run!r} is not a folder; allowed: the "
            "results folder of an earlier run (e.g. results-before/bench/local) or a "
            "committed one (e.g. docs/results/h100), relative to the working directory")
    from inferbench.serve.settings import check_scenarios

    check_scenarios(config)


def _check_targets(config: Mapping[str, Any]) -> None:
    slots: dict[str, str] = {}
    for name in target_names(config):
        other = slots.setdefault(slot_resource(name), name)
        if other != name:
            raise ConfigError(
                f"config key 'target': {other!r} and {name!r} map to the same device-slot "
                f"resource {slot_resource(name)!r}; rename one"
            )
    for name, entry in (config.get("targets") or {}).items():
        for key in entry.get("resources") or {}:
            if not IDENTIFIER.fullmatch(key) or key.startswith(("_", "bench_slot")):
                raise ConfigError(
                    f"config key 'targets.{name}.resources.{key}': not a resource name this "
                    "workflow can set; allowed: a Python identifier not starting with _ or "
                    "bench_slot (the device slots are set per target by the workflow)"
                )


def _yaml_kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number",
            bool: "true/false"}.get(type(value), type(value).__name__)


def read_config_file(path: str | Path) -> Any:
    """The YAML of a config file; a missing file or bad YAML is one ConfigError line."""
    import yaml

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None


def load_config(*paths: str | Path) -> dict[str, Any]:
    """Validate config files as the workflow reads ``--configfile A B``: each later file
    updates the earlier ones, mappings key by key and anything else whole (Snakemake's
    merge), and the result is validated once."""
    merged: dict[str, Any] = {}
    for path in paths:
        raw = read_config_file(path)
        if raw is not None and not isinstance(raw, Mapping):
            try:
                validate_config(raw)
            except ConfigError as exc:
                raise ConfigError(f"{path}: {exc}") from None
        _update_config(merged, raw or {})
    return validate_config(merged)


def _update_config(config: dict[str, Any], overwrite: Mapping[str, Any]) -> None:
    for key, value in overwrite.items():
        if isinstance(value, Mapping) and isinstance(config.get(key), dict):
            _update_config(config[key], value)
        else:
            config[key] = copy.deepcopy(value)


# Fields every transformers config takes besides its model's own.
COMMON_CONFIG_FIELDS = frozenset({
    "model_type", "architectures", "num_labels", "id2label", "label2id", "problem_type",
    "finetuning_task", "dtype", "torch_dtype", "transformers_version", "pad_token_id",
    "bos_token_id", "eos_token_id", "sep_token_id", "decoder_start_token_id",
    "tie_word_embeddings", "is_encoder_decoder", "is_decoder", "output_hidden_states",
    "output_attentions", "return_dict", "chunk_size_feed_forward"})


def architecture_fields(model_type: str) -> set[str] | None:
    """Field names the transformers config class of ``model_type`` accepts (None: no
    such model_type). Imports only transformers' configuration module (no torch)."""
    import dataclasses

    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        return None
    cls = CONFIG_MAPPING[model_type]
    names = set(COMMON_CONFIG_FIELDS) | set(getattr(cls, "attribute_map", {}) or {})
    if dataclasses.is_dataclass(cls):
        names |= {f.name for f in dataclasses.fields(cls)}
    # (a config class that needs arguments: its fields are enough)
    with contextlib.suppress(Exception):
        names |= set(cls().to_dict())
    return {n for n in names if not n.startswith("_")}  # private bookkeeping fields


def _check_architecture(model: Mapping[str, Any]) -> None:
    """model.architecture: a known model_type and only fields its config accepts (a
    misspelt field would otherwise be stored and ignored: the default is built)."""
    import difflib

    fields = dict(model.get("architecture") or {})
    if not fields:
        return
    base = builtin_architecture(model.get("id", "")) or {}
    model_type = fields.get("model_type") or base.get("model_type")
    if not model_type:
        raise ConfigError(
            "config key 'model.architecture.model_type' is required: no built-in "
            f"architecture for {model.get('id')!r}; allowed: a transformers model_type "
            "(e.g. bert, distilbert, roberta)")
    allowed = architecture_fields(str(model_type))
    if allowed is None:
        raise ConfigError(
            f"config key 'model.architecture.model_type': {model_type!r} is not a model type "
            "of the installed transformers; allowed: one of transformers' model types "
            "(e.g. bert, distilbert, roberta, albert, electra)")
    unknown = sorted(set(fields) - allowed - set(base))
    if unknown:
        hints = [f"{name!r} -> {close[0]!r}" for name in unknown
                 if (close := difflib.get_close_matches(name, sorted(allowed), n=1))]
        raise ConfigError(
            f"config key 'model.architecture': unknown field(s) {unknown} for model_type "
            f"{model_type!r}" + (f" (did you mean {', '.join(hints)}?)" if hints else "")
            + f"; allowed: {', '.join(sorted(allowed))}")


def backend_specs(config: Mapping[str, Any]) -> Iterator[BackendSpec]:
    for entry in config["backends"]:
        yield BackendSpec.from_entry(entry)


def backend_spec(config: Mapping[str, Any], name: str) -> BackendSpec:
    for spec in backend_specs(config):
        if spec.name == name:
            return spec
    raise KeyError(name)


def backend_batch_sizes(config: Mapping[str, Any], name: str) -> list[int]:
    """The batch sizes one backend runs: its own `batch_sizes`, else the sweep's."""
    for entry in config["backends"]:
        if entry["name"] == name:
            return sorted(entry.get("batch_sizes") or config["batch_sizes"])
    raise KeyError(name)


def target_names(config: Mapping[str, Any]) -> list[str]:
    """The targets this run measures (`target` as a list, in config order)."""
    value = config.get("target", "local")
    return [value] if isinstance(value, str) else list(value)


def target_resources(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Executor resources of one target's engine builds and benchmark jobs."""
    entry = (config.get("targets") or {}).get(name) or {}
    return dict(entry.get("resources") or {})


def target_expectations(config: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """`targets.<name>.expect` of every target that sets one."""
    return {name: dict(entry["expect"]) for name, entry in (config.get("targets") or {}).items()
            if entry.get("expect")}


def slot_resource(target: str) -> str:
    """Name of the Snakemake resource (limit 1) that serialises one target's jobs."""
    return "bench_slot_" + re.sub(r"[^A-Za-z0-9_]", "_", target)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def config_hash(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:16]


def job_settings(config: Mapping[str, Any], backend: str) -> dict[str, Any]:
    """Everything that defines one backend's benchmark jobs, and nothing else.

    The bench rule passes this as a param: editing one backend's entry (or the
    shared measurement policy) reruns exactly the jobs whose settings changed.
    """
    spec = backend_spec(config, backend)
    return {
        "backend": spec.as_dict(),
        "threads": config["threads"],
        "seq_len": config["seq_len"],
        "task": config["model"]["task"],
        "measurement": dict(config["measurement"]),
        "parity": dict(config["parity"].get(spec.precision, {})),
    }


def build_settings(config: Mapping[str, Any], backend: str) -> dict[str, Any]:
    """What an engine build reads: the backend's entry (less the options only its
    benchmark jobs read, see Backend.build_spec), threads and sequence length. Not the
    measurement policy or parity tolerances: changing those reruns the benchmarks,
    never the build."""
    from inferbench.backends import registry

    spec = backend_spec(config, backend)
    settings = {"backend": registry.get(spec.kind).build_spec(spec).as_dict(),
                "threads": config["threads"], "seq_len": config["seq_len"]}
    if registry.get(spec.kind).calibrated(spec):
        # only calibrated builds rerun when the calibration settings change
        settings["calibration"] = dict(config.get("calibration") or {})
    return settings


def calibration_samples(config: Mapping[str, Any]) -> int:
    """Batch size of the input set the static INT8 models calibrate on."""
    return int((config.get("calibration") or {}).get("samples", 32))
