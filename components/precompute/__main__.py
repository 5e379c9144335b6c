import sys

from components.common.cli import module_main
from components.precompute.cli import add_parser

sys.exit(module_main(add_parser, "precompute"))
