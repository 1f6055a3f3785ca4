"""lens_widget: the logit lens of any Hugging Face causal LM, as a notebook widget."""

from ._version import __version__
from .arch import ARCHITECTURES, ArchSpec, UnknownArchitectureError
from .cache import ActivationCache, ExtractionConfig
from .compare import Comparison, ComparisonError, compare
from .decoders import Decoder, UnsupportedSiteError
from .engine import LogitLens
from .hooked import HookedModel
from .inputs import PromptError
from .jacobian_lens import JacobianLens
from .result import LensResult
from .sources import Intervention
from .tokens import MultiTokenError, TokenLookupError, display_token
from .tuned_lens import TunedLens

__all__ = [
    "__version__",
    "ARCHITECTURES",
    "ActivationCache",
    "ArchSpec",
    "Comparison",
    "ComparisonError",
    "Decoder",
    "ExtractionConfig",
    "HookedModel",
    "Intervention",
    "JacobianLens",
    "LensResult",
    "LensWidget",
    "LogitLens",
    "MultiTokenError",
    "Patch",
    "PromptError",
    "Sweep",
    "TokenLookupError",
    "TunedLens",
    "UnknownArchitectureError",
    "UnsupportedSiteError",
    "compare",
    "display_token",
]


def __getattr__(name: str):
    # The widget pulls in anywidget / ipywidgets: import it only when asked for, so the engine
    # works where no notebook stack is installed (a GPU box, a batch job).
    if name == "LensWidget":
        from .widget import LensWidget

        return LensWidget
    raise AttributeError(f"module 'lens_widget' has no attribute {name!r}")
