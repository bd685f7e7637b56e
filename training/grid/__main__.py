"""``python -m training.grid GRID_FILE --out DIR ...``, the same as ``tlstm grid``."""

import sys

from . import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
