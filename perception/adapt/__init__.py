"""Adaptation of a shipped model to a user's own camera from unlabelled footage (``perception adapt``).

:mod:`.footage` reads and splits the footage, :mod:`.adapter` runs the steps, :mod:`.report`
measures before and after on the held-out part.
"""

from perception.adapt.adapter import AdaptOptions, AdaptResult, adapt, train_config

__all__ = ["AdaptOptions", "AdaptResult", "adapt", "train_config"]
