"""The notebook view: :class:`LensWidget`, its request handlers and its offline HTML export."""

from .widget import LensWidget, WidgetClosedError

__all__ = ["LensWidget", "WidgetClosedError"]
