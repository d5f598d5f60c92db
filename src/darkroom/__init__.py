"""darkroom: a self-hostable image processing service."""

import os

# numpy's BLAS works on 64 x 64 arrays here; its thread pool only spins beside libvips.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"

__all__ = ["__version__"]
