"""What every verb's command line shares: a verb whose flags come from the step's settings, and running one verb
as `python -m components.<step>` with the same errors and exit codes as `t2v <verb>`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from components.common import settings
from components.common.quiet import quiet_libraries


def add_verb(
    verbs: argparse._SubParsersAction,
    name: str,
    cls,
    action: Callable[..., int | None],
    *,
    help: str,
    description: str,
    epilog: str | None = None,
    sections: Callable[[argparse.Namespace], tuple[str, ...]] | None = None,
) -> argparse.ArgumentParser:
    """A verb with --recipe, --config, --set and one flag per setting of `cls`: it builds the settings (the recipe's
    section `name`, or `sections(args)`) and calls `action(settings)`."""
    parser = verbs.add_parser(
        name, help=help, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    settings.add_arguments(parser, cls)

    def run(args: argparse.Namespace) -> int | None:
        return action(settings.from_args(cls, args, sections(args) if sections else (name,)))

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
