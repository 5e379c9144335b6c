import sys

from components.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
