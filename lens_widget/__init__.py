"""lens_widget: the logit lens of any Hugging Face causal LM, as a notebook widget."""

from ._version import __version__
from .extraction import ActivationCache, ExtractionConfig
from .hooked import HookedModel, PromptError
from .lens import Decoder, LogitLens
from .models import ARCHITECTURES, ArchSpec, UnknownArchitectureError
from .result import LensResult
from .tokens import MultiTokenError, TokenLookupError, display_token

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


def __getattr__(name: str):
    # The widget pulls in anywidget / ipywidgets: import it only when asked for, so the engine
    # works where no notebook stack is installed (a GPU box, a batch job).
    if name == "LensWidget":
        from .widget import LensWidget

        return LensWidget
    raise AttributeError(f"module 'lens_widget' has no attribute {name!r}")
