"""perception: multi-camera driving perception with a structurally reparameterized network.

The public Python API lives in :mod:`perception.nn` (models), :mod:`perception.geometry`
(cameras and rigs) and :mod:`perception.data` (samples, the synthetic world, readers).
"""

import logging
import os

# OpenMP threads that spin while waiting (the default) starve our capture/render threads and any
# other process on small machines: measured 15-40x slower torch ops on a busy 2-core box.
# Passive waiting costs nothing measurable on an idle one. Only takes effect if set before torch
# loads; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
