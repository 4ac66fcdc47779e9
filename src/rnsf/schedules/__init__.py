"""λ_t schedules of RNSF: pure functions of s = t/T."""

from rnsf.schedules.lambdas import (
    BreakpointSchedule,
    ConstantSchedule,
    CosineSchedule,
    ExpSchedule,
    LambdaSchedule,
    LinearSchedule,
    PiecewiseSchedule,
)

__all__ = [
    "BreakpointSchedule",
    "ConstantSchedule",
    "CosineSchedule",
    "ExpSchedule",
    "LambdaSchedule",
    "LinearSchedule",
    "PiecewiseSchedule",
]
