"""Restoration methods sharing one call signature (`Method.restore`)."""

from rnsf.methods.base import Callback, Method, Pinv, StepInfo
from rnsf.methods.ddnm import DDNM, RNSF

__all__ = ["DDNM", "RNSF", "Callback", "Method", "Pinv", "StepInfo"]
