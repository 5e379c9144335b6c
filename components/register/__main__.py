import sys

from components.cli import main

sys.exit(main(["register", *sys.argv[1:]]))
