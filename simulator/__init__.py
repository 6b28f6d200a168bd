"""A local stand-in for the upstream API, for tests and demos (``videoq simulator``)."""

from .server import Fault, SimConfig, Simulator

__all__ = ["Fault", "SimConfig", "Simulator"]
