import sys

from components.caption.cli import add_parser
from components.common.cli import module_main

sys.exit(module_main(add_parser, "caption"))
