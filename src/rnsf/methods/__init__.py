"""Restoration methods sharing one call signature (`Method.restore`)."""

from rnsf.methods.base import Callback, Method, Pinv, StepInfo
from rnsf.methods.daps import DAPS
from rnsf.methods.ddnm import DDNM, RNSF
from rnsf.methods.ddrm import DDRM
from rnsf.methods.diffpir import DiffPIR
from rnsf.methods.dps import DPS
from rnsf.methods.pigdm import PiGDM
from rnsf.methods.reddiff import REDDiff
from rnsf.methods.ssd import SSD, SSDPlus
from rnsf.methods.state import SamplerState

__all__ = [
    "DAPS",
    "DDNM",
    "DDRM",
    "DPS",
    "RNSF",
    "SSD",
    "Callback",
    "DiffPIR",
    "Method",
    "PiGDM",
    "Pinv",
    "REDDiff",
    "SSDPlus",
    "SamplerState",
    "StepInfo",
]
