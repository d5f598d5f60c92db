"""The engine: executes an EditPlan on pyvips. Importing it configures libvips once."""

from darkroom.engine import runtime  # noqa: F401  (process-wide decoder settings)
from darkroom.engine.load import Header, probe
from darkroom.engine.render import Rendered, choose_format, render

__all__ = ["Header", "Rendered", "choose_format", "probe", "render"]
