from __future__ import annotations

import torch

from rnsf.diffusion import alphas_cumprod_with_start, linear_betas, time_travel_pairs


def test_alpha_bar_table():
    abar = alphas_cumprod_with_start(linear_betas())
    assert abar[0] == 1.0  # ᾱ_{-1}
    assert abs(abar[1].item() - 0.9999) < 1e-7  # ᾱ_0
    assert abs(abar[-1].item() - 4.0358e-5) < 1e-8  # ᾱ_999
    assert torch.all(abar[1:] < abar[:-1])


def test_uniform_schedule_matches_ddnm():
    pairs = time_travel_pairs(100)
    assert pairs[0] == (990, 980) and pairs[-1] == (0, -1)
    assert len(pairs) == 100
    assert [t for t, _ in time_travel_pairs(30)][:2] == [957, 924]


def test_time_travel_counts_match_upstream():
    def calls(*args):
        return sum(b < a for a, b in time_travel_pairs(*args))

    assert calls(100, 1, 1) == 100
    assert calls(100, 2, 2) == 198
    assert calls(100, 5, 3) == 290
    pairs = time_travel_pairs(100, 2, 2)
    assert len(pairs) + 1 == 297
    assert all(abs(a - b) == 10 or b == -1 for a, b in pairs)
