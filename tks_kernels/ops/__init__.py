"""One folder per op: ``reference.py`` (the definition in plain PyTorch) beside the
fast versions (``cpu.py``, ``triton.py``, ``cuda.py``)."""
