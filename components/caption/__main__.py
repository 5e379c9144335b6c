import sys

from components.cli import main

sys.exit(main(["caption", *sys.argv[1:]]))
