"""lens_widget: the logit lens of any Hugging Face causal LM, as a notebook widget."""

from ._version import __version__
from .result import LensResult
from .tokens import MultiTokenError, TokenLookupError, display_token

__all__ = ["__version__", "LensResult", "MultiTokenError", "TokenLookupError", "display_token"]
