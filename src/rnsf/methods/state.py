"""Resumable sampling: where a batch's sampler stands between two steps.

A job stopped by a signal (`rnsf.engine.interrupt`) stops at a step boundary of the batch in
flight. For a method that opts in, the engine then saves that batch's `SamplerState` (and every
image's generator state) to the job folder, and the rerun continues the batch from that step, to
the same bytes as a run that was never stopped (`rnsf.engine.inflight`). A method that does not
opt in still works: its batch in flight restarts from its first step.

The protocol, for a method whose loop runs steps 0 … n − 1:

1. Declare `resumable = True` (a class attribute).
2. Take `state: SamplerState | None = None` in `restore`; `state = state or SamplerState()`
   (`from rnsf.methods import SamplerState`).
3. Start the loop at `state.step`: if `state.step > 0`, the iterate is `state.x` and the tensors
   the method carries between steps are in `state.carry`; else start as usual.
4. At the end of each step, before calling the callback, record where the loop stands:
   `state.reached(i + 1, x, x0=x0)`: the steps done, the new iterate and, by keyword, whatever
   later steps read besides x (DDNM's x̂₀ for time travel). It only keeps references: no copy,
   no device sync.

The callback is where a stop request is read, so the recorded state is the one the stop keeps.
Everything else the loop needs must follow from the method's settings, y, the operator and the
step index (coefficient tables, SSD's stage), or be carried. Random draws need nothing: the
engine saves and restores the per-image generators itself. For example:

    x = state.x if state.step else noise()
    for i, t in enumerate(timesteps[state.step :], start=state.step):
        x = step(x, t)
        state.reached(i + 1, x)
        if callback is not None:
            callback(StepInfo(...))
"""

from __future__ import annotations

import torch


class SamplerState:
    """A batch's sampler after `step` steps: the iterate `x` and the tensors in `carry`."""

    def __init__(self) -> None:
        self.step = 0
        self.x: torch.Tensor | None = None
        self.carry: dict[str, torch.Tensor] = {}

    def reached(self, step: int, x: torch.Tensor, **carry: torch.Tensor) -> None:
        """The loop has done `step` steps; `x` and `carry` are what the next step starts from."""
        self.step, self.x = step, x
        self.carry.update(carry)

    def state_dict(self) -> dict:
        """On the CPU, detached: what `torch.save` stores."""
        return {
            "step": self.step,
            "x": _cpu(self.x),
            "carry": {key: _cpu(value) for key, value in self.carry.items()},
        }

    def load_state_dict(self, saved: dict, device: torch.device | str = "cpu") -> None:
        self.step = int(saved["step"])
        self.x = _to(saved["x"], device)
        self.carry = {key: _to(value, device) for key, value in saved["carry"].items()}


def _cpu(value):
    return value.detach().cpu() if isinstance(value, torch.Tensor) else value


def _to(value, device):
    return value.to(device) if isinstance(value, torch.Tensor) else value
