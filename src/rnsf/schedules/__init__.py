"""λ_t schedules of RNSF: pure functions of s = t/T."""

from rnsf.schedules.lambdas import (
    ConstantSchedule,
    CosineSchedule,
    ExpSchedule,
    LambdaSchedule,
    LinearSchedule,
    PiecewiseSchedule,
)

__all__ = [
    "ConstantSchedule",
    "CosineSchedule",
    "ExpSchedule",
    "LambdaSchedule",
    "LinearSchedule",
    "PiecewiseSchedule",
]
