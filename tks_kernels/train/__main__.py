"""``python -m tks_kernels.train``: the ``tks-train`` command."""
import sys

from .loop import main

sys.exit(main())
