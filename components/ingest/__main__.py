import sys

from components.cli import main

sys.exit(main(["ingest", *sys.argv[1:]]))
