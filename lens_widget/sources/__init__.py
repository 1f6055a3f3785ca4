"""The activation-source seam: "run these inputs, record these sites at these positions".

Everything that needs activations (the grid, ``extract_cache``, cell detail, trajectories, the
widget's prompt box) asks an :class:`ActivationSource`; nothing above this seam knows whether
local hooks or an nnsight trace produced them.
"""

from .base import ActivationRef, ActivationSource, Forward, Intervention, Recording, RemoteActivations, Work
from .hooks import HookSource, Intervener, SiteRecorder

__all__ = ["ActivationSource", "Recording", "Work", "Forward", "ActivationRef", "RemoteActivations", "Intervention", "HookSource", "Intervener", "SiteRecorder"]
