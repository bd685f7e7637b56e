"""``python -m tlstm.ort_ops``: see :mod:`tlstm.ort_ops`."""

import sys

from . import main

sys.exit(main())
