"""Restoration methods sharing one call signature (`Method.restore`)."""

from rnsf.methods.base import Callback, Method, Pinv, StepInfo
from rnsf.methods.ddnm import DDNM, RNSF
from rnsf.methods.ddrm import DDRM
from rnsf.methods.dps import DPS
from rnsf.methods.ssd import SSD, SSDPlus
from rnsf.methods.state import SamplerState

__all__ = [
    "DDNM",
    "DDRM",
    "DPS",
    "RNSF",
    "SSD",
    "Callback",
    "Method",
    "Pinv",
    "SSDPlus",
    "SamplerState",
    "StepInfo",
]
