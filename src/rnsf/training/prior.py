"""LightningModule that trains the built-in ε-prediction prior (DDPM loss, EMA weights)."""

from __future__ import annotations

import lightning as L
import torch
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from rnsf.denoisers.tiny_unet import TinyUNet


class PriorTraining(L.LightningModule):
    """ε-matching loss ‖ε − ε_θ(√ᾱ_t x + √(1−ᾱ_t) ε, t)‖² with t ~ U{0, …, T−1}."""

    def __init__(
        self,
        channels: tuple[int, ...] = (32, 64, 96, 128),
        num_res_blocks: int = 2,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        ema_decay: float = 0.999,
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)  # plain types in the checkpoint
        self.save_hyperparameters()
        self.net = TinyUNet(channels=tuple(channels), num_res_blocks=num_res_blocks)
        self.ema = AveragedModel(self.net, multi_avg_fn=get_ema_multi_avg_fn(ema_decay))
        self.ema.requires_grad_(False)

    def training_step(self, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        t = torch.randint(0, self.net.num_timesteps, (x.shape[0],), device=x.device)
        abar = self.net.alphas_cumprod(device=x.device)[t + 1].view(-1, 1, 1, 1)
        noise = torch.randn_like(x)
        x_t = abar.sqrt() * x + (1 - abar).sqrt() * noise
        loss = F.mse_loss(self.net(x_t, t), noise)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, *args) -> None:
        self.ema.update_parameters(self.net)

    def configure_optimizers(self):
        return torch.optim.AdamW(
            self.net.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )

    def export(self) -> dict:
        """The shipped file's content: EMA weights in fp16 plus the architecture."""
        state = {k: v.half() for k, v in self.ema.module.state_dict().items()}
        return {
            "state_dict": state,
            "arch": {
                "channels": list(self.hparams.channels),
                "num_res_blocks": self.hparams.num_res_blocks,
            },
            "steps": int(self.global_step),
        }
