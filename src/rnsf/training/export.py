"""Export the EMA weights of a Lightning training checkpoint as a built-in prior file.

python -m rnsf.training.export outputs/train/<run>/checkpoints/last.ckpt tiny_prior.pt
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from rnsf.training.prior import PriorTraining


def export_checkpoint(ckpt: Path, out: Path) -> dict:
    # a training checkpoint of this project (hyper-parameters may hold OmegaConf containers);
    # never point this at a file from elsewhere
    module = PriorTraining.load_from_checkpoint(str(ckpt), map_location="cpu", weights_only=False)
    payload = module.export()
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    payload["steps"] = int(state.get("global_step", payload["steps"]))
    run_config = ckpt.resolve().parent.parent / ".hydra" / "config.yaml"
    if run_config.is_file():  # the training run's config, for provenance
        from omegaconf import OmegaConf

        config = OmegaConf.to_container(OmegaConf.load(run_config), resolve=False)
        payload["train_config"] = config
        payload["seed"] = config.get("seed")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, out)
    return payload


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        raise SystemExit("usage: python -m rnsf.training.export CHECKPOINT.ckpt OUT.pt")
    payload = export_checkpoint(Path(argv[0]), Path(argv[1]))
    print(f"exported {payload['steps']} steps of EMA weights to {argv[1]}")


if __name__ == "__main__":
    main()
