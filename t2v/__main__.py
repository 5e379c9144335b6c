import sys

from t2v.cli import main

sys.exit(main())
