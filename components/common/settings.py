"""Settings: each step's settings are one frozen dataclass with production defaults, declared once; every runner
(the CLI, the DVC stage, the KFP component, a test) builds them through `load`, in this order:

    the dataclass defaults < the step's sections of a recipe < a settings file < CLI flags < key=value overrides

A recipe is one YAML file with a section per step (`synth`, `ingest`, `caption`, `precompute`, `train` with
`stage1`..`stage3` on top of it, `evaluate`, `register`, `generate`); a section is a mapping, or the path of a YAML
file holding one. It states only what differs from the defaults. Unknown keys are errors naming the known ones.
Each field is declared with `setting(default, help)`: the help is the CLI's, so flags and their help are generated
from the fields (components.common.cli: `add_arguments`, `from_args`) and cannot drift from them.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from collections.abc import Iterable
from pathlib import Path

import yaml


def setting(default=dataclasses.MISSING, help: str = "", *, positional: bool = False, merge: bool = False):
    """A dataclass field with its description (the CLI help). Mutable defaults are copied per instance. `merge`: a
    mapping given for it is merged over the default (GPUs per step: one step's keeps the others')."""
    metadata = {"help": help, "positional": positional, "merge": merge}
    if isinstance(default, dict | list | set):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


# ------------------------------------------------------------------------------------------------------ types


def _unwrap(hint) -> tuple[object, bool]:
    """(the type without None, whether None is allowed)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True  # noqa: UP007
    return hint, False


def _is_union_with(hint, kind) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and kind in typing.get_args(hint)


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _check(value, hint, where: str):
    """`value` converted to the field's type where that is lossless; a ValueError naming the key otherwise."""
    base, optional = _unwrap(hint)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{where}: None is not allowed here; give a {getattr(base, '__name__', base)}")
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base is float and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-4 (no dot) as text: a number all the same
            return float(value)
        except ValueError:
            pass
    if typing.get_origin(base) is tuple and isinstance(value, list | tuple):
        return tuple(value)
    simple = {bool: bool, int: int, float: float, str: str}.get(base)
    if simple is not None and (not isinstance(value, simple) or (simple is int and isinstance(value, bool))):
        raise ValueError(f"{where}={value!r}: expected {simple.__name__}")
    if base is dict and not isinstance(value, dict):
        raise ValueError(f"{where}={value!r}: expected a mapping")
    return value


# ------------------------------------------------------------------------------------------------ building


def items_of(hint):
    """The dataclass of a `tuple[Settings, ...]` hint; None for any other type."""
    args = typing.get_args(hint)
    if (
        typing.get_origin(hint) is tuple
        and len(args) == 2
        and args[1] is Ellipsis
        and dataclasses.is_dataclass(args[0])
    ):
        return args[0]
    return None


def _fields(cls) -> list[dataclasses.Field]:
    """The fields of `cls` that are settings: not those derived from data (metadata "derived": where they are read)."""
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("derived")]


def build(cls, values: dict, where: str = "settings"):
    """`cls` from nested plain values (YAML's); unknown keys are an error that names the known ones."""
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping of settings, got {values!r}")
    for f in (f for f in dataclasses.fields(cls) if f.metadata.get("derived") and f.name in values):
        raise ValueError(f"{where}.{f.name} is not a setting: it is read from {f.metadata['derived']}; remove it")
    known = {f.name: f for f in _fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    hints = _hints(cls)
    kwargs = {}
    for name, value in values.items():
        base, _ = _unwrap(hints[name])
        item = items_of(base)
        if dataclasses.is_dataclass(base) and isinstance(value, dict):
            kwargs[name] = build(base, value, f"{where}.{name}")
        elif item is not None and isinstance(value, list | tuple):  # a list of nested settings (a schedule's stages)
            kwargs[name] = tuple(build(item, v, f"{where}.{name}[{i}]") for i, v in enumerate(value))
        else:
            f = known[name]
            if f.metadata.get("merge") and isinstance(value, dict):
                value = merge(f.default_factory() if f.default_factory is not dataclasses.MISSING else {}, value)
            kwargs[name] = _check(value, hints[name], f"{where}.{name}")
    return cls(**kwargs)


def to_dict(cfg, derived: bool = True) -> dict:
    """Plain values (tuples as lists): for YAML, JSON and MLflow params; for `build` without `derived` fields."""
    fields = dataclasses.fields(cfg) if derived else _fields(type(cfg))

    def plain(value):
        if dataclasses.is_dataclass(value):
            return to_dict(value, derived)
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        return value

    return json.loads(json.dumps({f.name: plain(getattr(cfg, f.name)) for f in fields}, default=str))


def merge(base: dict, extra: dict) -> dict:
    """`extra` over `base`, mapping by mapping (a value that is not a mapping replaces)."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_yaml(source: str | Path, what: str) -> dict:
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"{what} {source} not found")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{what} {source}: not YAML ({err})") from err
    if not isinstance(values, dict):
        raise ValueError(f"{what} {source}: expected a mapping of settings")
    return values


def read_recipe(recipe: str | Path | dict | None) -> dict:
    """A recipe from a file path, YAML text (as a KFP task receives it) or a mapping; {} for None or ""."""
    if recipe is None or recipe == "":
        return {}
    if isinstance(recipe, dict):
        return recipe
    text = str(recipe)
    if "\n" not in text and (text.endswith((".yaml", ".yml")) or Path(text).is_file()):
        return read_yaml(text, "recipe")
    values = yaml.safe_load(text)
    if not isinstance(values, dict):
        raise ValueError(f"recipe {text[:80]!r}: expected a file path or YAML text with a section per step")
    return values


def stage_sections(stage: int) -> tuple[str, str]:
    """A recipe's sections for a training stage: `train` (shared) under `stage<N>`; the stage's precompute task reads
    the stage's data settings from them too."""
    return ("train", f"stage{stage}")


def stage_data(stage: dict) -> dict:
    """What a training stage's precompute task sets over the recipe's `precompute` section: the stage's own
    `precompute` settings and its `subset`, from the stage's values (layered from a recipe, or a TrainConfig's)."""
    return {**(stage.get("precompute") or {}), "subset": stage.get("subset") or {}}


def sections_of(recipe: dict, names: Iterable[str]) -> dict:
    """The named sections merged in order (later ones win); a section may be the path of a YAML file."""
    values: dict = {}
    for name in names:
        section = recipe.get(name) or {}
        if isinstance(section, str):
            section = read_yaml(section, f"recipe section {name}")
        if not isinstance(section, dict):
            raise ValueError(f"recipe section {name}: expected a mapping or the path of a YAML file")
        values = merge(values, section)
    return values


def _field_at(cls, path: list[str]):
    """The type hint at a dotted path (None when the path leaves the dataclasses, e.g. a key inside a dict)."""
    hint = cls
    for part in path:
        base, _ = _unwrap(hint)
        if not dataclasses.is_dataclass(base):
            return None
        hint = _hints(base).get(part)
        if hint is None:
            return None
    return hint


def parse_value(text: str, hint):
    """The value of `key=text` for a field of type `hint`: plain text for strings ("none"/"null" is None where
    None is allowed), YAML for everything else."""
    base, optional = _unwrap(hint) if hint is not None else (None, False)
    if optional and text.lower() in ("none", "null", ""):
        return None
    if base is str:
        return text
    return yaml.safe_load(text) if text else ""


def apply_overrides(values: dict, overrides: Iterable[str], cls) -> dict:
    """`key.sub=value` items applied to nested values."""
    values = copy.deepcopy(values)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected key=value, e.g. optim.lr=1e-4")
        key, text = item.split("=", 1)
        path = key.strip().split(".")
        node = values
        for part in path[:-1]:
            child = node.get(part)
            node[part] = child = dict(child) if isinstance(child, dict) else {}
            node = child
        node[path[-1]] = parse_value(text, _field_at(cls, path))
    return values


def scoped(overrides: Iterable[str], sections: Iterable[str]) -> list[str]:
    """The `section.key=value` items addressed to `sections`, without the section (a pipeline's overrides are
    scoped this way: `stage2.max_steps=100`, `ingest.filters.dedup_distance=2`)."""
    names = tuple(sections)
    out = []
    for item in overrides:
        head, _, rest = item.partition(".")
        if head in names and rest:
            out.append(rest)
    return out


def layered(
    cls,
    *,
    recipe: str | Path | dict | None = None,
    sections: Iterable[str] = (),
    config: str | Path | None = None,
    flags: dict | None = None,
    overrides: Iterable[str] = (),
    fixed: dict | None = None,
    run_overrides: Iterable[str] = (),
) -> dict:
    """Plain values in loading order: defaults read from the whole recipe, when there is one
    (`cls.recipe_defaults(recipe, run_overrides)`, where a step's default follows another step's settings, as the
    run's overrides of every section set them) < recipe sections < `config` file < flags < `overrides` <
    `fixed` (what the runner decides, such as the input and output paths of a KFP task). `cls` types the overrides
    (None: YAML)."""
    whole = read_recipe(recipe)
    values = sections_of(whole, sections)
    if whole and hasattr(cls, "recipe_defaults"):
        values = merge(cls.recipe_defaults(whole, list(run_overrides)), values)
    if config is not None:
        values = merge(values, read_yaml(config, "settings file"))
    values = apply_overrides(merge(values, flags or {}), overrides, cls)
    return merge(values, fixed or {})


def load(cls, **sources):
    """The step's settings: its defaults under the values `layered(cls, **sources)` gives. An error in a recipe
    names the recipe's file and the section that holds the bad value."""
    values = layered(cls, **sources)
    try:
        return build(cls, values, cls.__name__)
    except ValueError as err:
        origin = _origin(cls, sources.get("recipe"), sources.get("sections", ()))
        if origin is None:
            raise
        raise ValueError(f"{origin}: {err}") from None


def _origin(cls, recipe, sections) -> str | None:
    """Which recipe section (and file) holds what `build` refused: the first that fails on its own."""
    whole = read_recipe(recipe)
    for name in sections:
        try:
            build(cls, sections_of(whole, (name,)), cls.__name__)
        except ValueError:
            named = str(recipe) if isinstance(recipe, str | Path) and "\n" not in str(recipe) else None
            own = whole.get(name) if isinstance(whole.get(name), str) else None  # a section given as its own file
            where = f"recipe {named}" if named else "the recipe"
            return f"{where}, section {name}" + (f" ({own})" if own else "")
    return None


def defaults(cls, prefix: str = "") -> dict[str, object]:
    """Every leaf setting's default by dotted path (nested dataclasses flattened)."""
    out = {}
    instance_hints = _hints(cls)
    for f in _fields(cls):
        base, _ = _unwrap(instance_hints[f.name])
        if dataclasses.is_dataclass(base) and f.default_factory is not dataclasses.MISSING:
            out.update(defaults(base, f"{prefix}{f.name}."))
            continue
        value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out[f"{prefix}{f.name}"] = value
    return out


def updated(cfg, changes: dict):
    """`cfg` with settings replaced by dotted path ({"filters.dedup_distance": None}), checked like any input."""
    values = dataclasses.asdict(cfg)
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = values
        for part in parents:
            node = node[part]
        node[last] = value
    return build(type(cfg), values, type(cfg).__name__)
