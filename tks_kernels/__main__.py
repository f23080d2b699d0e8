"""``python -m tks_kernels``: the ``tks-train`` command."""
import sys

from .train import main

sys.exit(main())
