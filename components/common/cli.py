"""What every verb's command line shares: a verb whose flags come from the step's settings, and running one verb
as `python -m components.<step>` with the same errors and exit codes as `t2v <verb>`."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import logging
import sys
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path

import yaml

from components.common import settings
from components.common.quiet import quiet_libraries

RUNNER_FLAGS = ("recipe", "config", "set")  # flags every verb has; no setting may take these names
_DEST = "setting:"


def _flag_kind(hint):
    """(argparse keyword arguments for a flag of this type) or None where only --set can give it."""
    base, optional = settings._unwrap(hint)
    if base is bool:
        return {"action": argparse.BooleanOptionalAction, "metavar": None}
    if base in (int, float, str):

        def convert(text: str, base=base):
            if optional and text.lower() in ("none", "null", ""):
                return None
            return base(text)

        convert.__name__ = base.__name__  # argparse names the type in its errors
        return {"type": convert}
    if typing.get_origin(base) in (typing.Union, types.UnionType) and set(typing.get_args(base)) <= {bool, int, str}:
        # true/false, a number, or a word such as auto: the setting's own check says which it takes
        return {"type": lambda text: {"true": True, "false": False}.get(
                    text.lower(), int(text) if text.lstrip("-").isdigit() else text), "metavar": "VALUE"}  # fmt: skip
    if settings.items_of(base) is not None:  # a list of nested settings: in a settings file or --set only
        return None
    if typing.get_origin(base) is tuple and typing.get_args(base)[-1] is Ellipsis:
        return {"nargs": "*"}
    if base is dict or settings._is_union_with(base, dict) or typing.get_origin(base) in (tuple, list) or base is list:
        return {"type": _yaml_flag(base), "metavar": "YAML"}
    return None


def _yaml_flag(base):
    def convert(text: str):
        if Path(text).is_file() and (base is dict):
            return yaml.safe_load(Path(text).read_text())
        return yaml.safe_load(text)

    convert.__name__ = "YAML"
    return convert


def _show(value) -> str:
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str)
    return str(value)


def add_arguments(parser: argparse.ArgumentParser, cls, *, prefix: str = "", recipe: bool = True) -> None:
    """--recipe, --config, --set and one flag per setting (nested settings as --group.name)."""
    if not prefix:
        clash = set(RUNNER_FLAGS) & {f.name for f in dataclasses.fields(cls)}
        assert not clash, f"{cls.__name__} fields {clash} clash with the runner flags"
        if recipe:
            parser.add_argument(
                "--recipe", help="a recipe YAML: this step's settings are its section(s) (e.g. params.yaml)"
            )
        parser.add_argument("--config", help="a YAML file of this step's settings (what differs from the defaults)")
        parser.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE", help="any setting, e.g. --set a.b=1; repeatable"
        )
    hints = settings._hints(cls)
    doc = inspect.cleandoc(cls.__doc__ or "")
    doc = "" if doc.startswith(f"{cls.__name__}(") else doc  # the signature dataclasses write for classes without one
    group = parser if not prefix else parser.add_argument_group(prefix.rstrip("."), doc)
    for f in settings._fields(cls):
        base, _ = settings._unwrap(hints[f.name])
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(base):
            if f.default_factory is not dataclasses.MISSING:  # a group; an optional one is given with --set only
                add_arguments(parser, base, prefix=f"{path}.")
            continue
        kind = _flag_kind(hints[f.name])
        if kind is None:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        text = f.metadata.get("help", "")
        if f.metadata.get("positional"):
            nargs = "+" if kind.get("nargs") == "*" else None
            parser.add_argument(path, help=text, **{**kind, "nargs": nargs})
            continue
        shown = "" if default in (None, "", (), []) else f" (default: {_show(default)})"
        kind.setdefault("metavar", f.name.upper())
        group.add_argument(
            f"--{path.replace('_', '-')}", dest=_DEST + path, default=argparse.SUPPRESS, help=text + shown, **kind
        )


def given_flags(args: argparse.Namespace) -> dict:
    """The settings given as flags, as nested values."""
    values: dict = {}
    for dest, value in vars(args).items():
        if not dest.startswith(_DEST):
            continue
        *parents, last = dest[len(_DEST) :].split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = list(value) if isinstance(value, tuple) else value
    return values


def from_args(cls, args: argparse.Namespace, sections: Iterable[str] = (), fixed: dict | None = None):
    """The step's settings from its parsed command line (see `add_arguments`)."""
    positional = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)
        if f.metadata.get("positional") and getattr(args, f.name, None) is not None
    }
    return settings.load(
        cls,
        recipe=getattr(args, "recipe", None),
        sections=sections,
        config=getattr(args, "config", None) or None,
        flags=settings.merge(positional, given_flags(args)),
        overrides=args.set,
        fixed=fixed,
    )


def add_verb(
    verbs: argparse._SubParsersAction,
    name: str,
    cls,
    action: Callable[..., int | None],
    *,
    description: str,
    epilog: str | None = None,
    sections: Callable[[argparse.Namespace], tuple[str, ...]] | None = None,
) -> argparse.ArgumentParser:
    """A verb with --recipe, --config, --set and one flag per setting of `cls`: it builds the settings (the recipe's
    section `name`, or `sections(args)`) and calls `action(settings)`."""
    parser = verbs.add_parser(
        name, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser, cls)

    def run(args: argparse.Namespace) -> int | None:
        return action(from_args(cls, args, sections(args) if sections else (name,)))

    parser.set_defaults(run=run)
    return parser


def run_parser(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse and run; a ValueError (bad input) is printed as one line and exits with 2 (-v: the traceback)."""
    quiet_libraries()
    args = parser.parse_args(argv)
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args) or 0
    except ValueError as err:
        if verbose:
            raise
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2


def module_main(add_parser: Callable[[argparse._SubParsersAction], None], verb: str, package: str = "") -> int:
    """`python -m components.<step> ...`: the step's one verb, as `t2v <verb> ...` runs it."""
    parser = argparse.ArgumentParser(prog=f"python -m {package or 'components.' + verb}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    add_parser(parser.add_subparsers(metavar="<verb>", required=True))
    return run_parser(parser, [verb, *sys.argv[1:]])
