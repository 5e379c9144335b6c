import sys

from components.cli import main

sys.exit(main(["generate", *sys.argv[1:]]))
