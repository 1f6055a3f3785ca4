"""lens_widget: the logit lens of any Hugging Face causal LM, as a notebook widget."""

from ._version import __version__
from .extraction import ActivationCache, ExtractionConfig
from .hooked import HookedModel, PromptError
from .lens import Decoder, LogitLens
from .models import ARCHITECTURES, ArchSpec, UnknownArchitectureError
from .result import LensResult
from .tokens import MultiTokenError, TokenLookupError, display_token
from .widget import LensWidget

__all__ = [
    "__version__",
    "ARCHITECTURES",
    "ActivationCache",
    "ArchSpec",
    "Decoder",
    "ExtractionConfig",
    "HookedModel",
    "LensResult",
    "LensWidget",
    "LogitLens",
    "MultiTokenError",
    "PromptError",
    "TokenLookupError",
    "UnknownArchitectureError",
    "display_token",
]
