from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from rnsf.schedules import (
    ConstantSchedule,
    CosineSchedule,
    ExpSchedule,
    LinearSchedule,
    PiecewiseSchedule,
)
from rnsf.schedules.plot import load_schedule_configs, plot_schedules

GRID = [i / 200 for i in range(201)]


def test_exp_schedule_values():
    """§3.2 with u = 1 − s: 0.5 (1 − e^{−5u}) for u ≤ ¼, 2u for ¼ < u ≤ ½, 1 for u > ½."""
    lam = ExpSchedule()
    assert lam(0.0) == 1.0 and lam(0.49) == 1.0
    assert lam(0.5) == pytest.approx(1.0)
    assert lam(0.6) == pytest.approx(0.8)
    assert lam(0.74) == pytest.approx(0.52)
    assert lam(0.75) == pytest.approx(0.5 * (1 - math.exp(-1.25)))
    assert lam(0.9) == pytest.approx(0.5 * (1 - math.exp(-0.5)))
    assert lam(1.0) == 0.0
    # rising along the sampling (s runs from 1 to 0), as "progressive constraint enhancement" says
    values = [lam(s) for s in GRID]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_exp_schedule_reversed_is_the_diffusion_time_reading():
    """reverse: true reads the formula's t as the diffusion timestep: λ = 1 for s > ½, 2s for
    ¼ < s ≤ ½, 0.5 (1 − e^{−5s}) for s ≤ ¼, so the last step (s = 0) does not project at all."""
    lam = ExpSchedule(reverse=True)
    assert lam(0.99) == 1.0 and lam(0.51) == 1.0
    assert lam(0.4) == pytest.approx(0.8)
    assert lam(0.25) == pytest.approx(0.5 * (1 - math.exp(-1.25)))
    assert lam(0.1) == pytest.approx(0.5 * (1 - math.exp(-0.5)))
    assert lam(0.0) == 0.0


def test_reverse_mirrors_time():
    for schedule in (ExpSchedule(), LinearSchedule(start=0.9, end=0.2), CosineSchedule()):
        rev = type(schedule)(**{**vars(schedule), "reverse": True})
        for s in GRID:
            assert rev(s) == pytest.approx(schedule(1 - s))


def test_linear_cosine_constant_piecewise():
    assert LinearSchedule(start=1.0, end=0.0)(0.3) == pytest.approx(0.3)
    assert LinearSchedule(start=0.8, end=0.2)(1.0) == pytest.approx(0.8)
    assert CosineSchedule()(0.5) == pytest.approx(0.5)
    assert CosineSchedule()(1.0) == pytest.approx(1.0) and CosineSchedule()(0.0) == 0.0
    assert ConstantSchedule(level=0.7)(0.123) == 0.7
    pw = PiecewiseSchedule(knots=((1.0, 1.0), (0.0, 0.2), (0.5, 0.4)))  # unsorted input
    assert pw(0.25) == pytest.approx(0.3)
    assert pw(0.75) == pytest.approx(0.7)
    assert pw(0.0) == pytest.approx(0.2) and pw(1.0) == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["exp", "linear", "constant", "cosine", "piecewise"])
def test_configured_schedules_stay_in_unit_interval(name):
    schedule = load_schedule_configs()[name]
    for rev in (False, True):
        sched = type(schedule)(**{**vars(schedule), "reverse": rev})
        assert all(0.0 <= sched(s) <= 1.0 for s in GRID)


def test_out_of_range_s_is_rejected():
    with pytest.raises(ValueError, match=r"s = t/T must lie in \[0, 1\]"):
        ExpSchedule()(1.5)
    with pytest.raises(ValueError, match="knots must have s in"):
        PiecewiseSchedule(knots=((2.0, 1.0),))


def test_plot_all_schedules(tmp_path: Path):
    out = plot_schedules(load_schedule_configs(), tmp_path / "schedules.png")
    assert out.stat().st_size > 10_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
