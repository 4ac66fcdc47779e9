"""Train the built-in prior on the package photos:  python train.py [hydra overrides]."""

from __future__ import annotations

import shutil
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from lightning.pytorch.loggers import CSVLogger, WandbLogger
    from torch.utils.data import DataLoader

    from rnsf.utils.provenance import git_sha

    L.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.out_dir)
    data = hydra.utils.instantiate(cfg.data)
    loader = DataLoader(
        data, batch_size=cfg.batch_size, num_workers=cfg.num_workers, persistent_workers=False
    )
    module = hydra.utils.instantiate(cfg.model)
    if cfg.logger == "wandb":
        logger = WandbLogger(project="rnsf-prior", save_dir=str(out), name=cfg.run_name)
    else:
        logger = CSVLogger(save_dir=str(out), name="csv")
    checkpoint = hydra.utils.instantiate(cfg.checkpoint)
    trainer = hydra.utils.instantiate(cfg.trainer, logger=logger, callbacks=[checkpoint])
    # resuming reads our own checkpoint, whose hyper-parameters may hold OmegaConf containers
    trainer.fit(module, loader, ckpt_path=cfg.ckpt_path, weights_only=False)

    payload = module.export()
    payload["seed"] = cfg.seed
    payload["git_sha"] = git_sha()
    payload["train_config"] = OmegaConf.to_container(cfg, resolve=True)
    target = out / "tiny_prior.pt"
    torch.save(payload, target)
    print(f"exported {payload['steps']} steps of EMA weights to {target}")
    if cfg.export_to:
        shutil.copyfile(target, cfg.export_to)
        print(f"copied to {cfg.export_to}")


if __name__ == "__main__":
    main()
