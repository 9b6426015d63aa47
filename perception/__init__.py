"""perception: multi-camera driving perception with a structurally reparameterized network.

The public Python API lives in :mod:`perception.nn` (models), :mod:`perception.geometry`
(cameras and rigs) and :mod:`perception.data` (samples, the synthetic world, readers).
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
