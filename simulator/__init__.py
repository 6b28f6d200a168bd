"""A local stand-in for the upstream API, for tests and demos (``videoq simulator``)."""

from .model import Fault, SimConfig
from .server import Simulator

__all__ = ["Fault", "SimConfig", "Simulator"]
