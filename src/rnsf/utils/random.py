"""Per-image random streams: an image's result never depends on its batch or its GPU."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def image_seed(seed: int, index: int) -> int:
    """A 63-bit seed derived from (run seed, image index) by NumPy's SeedSequence hashing."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def image_generators(
    seed: int, indices: Sequence[int], device: torch.device | str = "cpu"
) -> list[torch.Generator]:
    """One `torch.Generator` per image, seeded from (seed, image index)."""
    return [torch.Generator(device=device).manual_seed(image_seed(seed, int(i))) for i in indices]


def _per_image(sample, shape, generators, device, dtype) -> torch.Tensor:
    return torch.stack(
        [sample(tuple(shape), generator=g, device=device, dtype=dtype) for g in generators]
    )


def randn(
    shape: Sequence[int],
    generators: Sequence[torch.Generator],
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A batch of standard normal tensors of per-image `shape`, image b drawn from generator b."""
    return _per_image(torch.randn, shape, generators, device, dtype)


def rand(
    shape: Sequence[int],
    generators: Sequence[torch.Generator],
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Like `randn`, uniform on [0, 1)."""
    return _per_image(torch.rand, shape, generators, device, dtype)
