"""Any `diffusers` `UNet2DModel` as an rnsf denoiser (`model=diffusers`).

`model.path` is a local folder or a Hugging Face Hub id (`google/ddpm-cat-256`). A Hub id is
read from the Hugging Face cache only, never fetched while a job runs
(`python -m rnsf.download model=diffusers model.path=ID` fetches it). The folder is a model
folder (`config.json` + `diffusion_pytorch_model.safetensors`, `scheduler_config.json` beside
it) or a pipeline folder (`unet/`, `scheduler/`).

The samplers assume ε-prediction on the linear-β diffusion (β from 1e-4 to 0.02, T = 1000);
`check_scheduler` compares the folder's scheduler config with that and refuses anything else
(v-prediction, cosine β, another T) in one line. `diffusers` is an optional dependency:
`pip install 'rnsf[hub]'`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from torch import nn

from rnsf.denoisers.execution import ExecutionPolicy
from rnsf.denoisers.pretrained import PretrainedDenoiser
from rnsf.diffusion import NUM_TIMESTEPS
from rnsf.utils.errors import UserError
from rnsf.utils.schema import RUNTIME_SCHEMA

INSTALL = "pip install 'rnsf[hub]' (or pip install diffusers)"
#: what the samplers assume (rnsf.diffusion): linear betas 1e-4 -> 0.02 over 1000 steps, ε
EXPECTED = {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}
#: the files a job needs from a Hub repository
HUB_PATTERNS = [
    "config.json",
    "scheduler_config.json",
    "diffusion_pytorch_model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "scheduler/scheduler_config.json",
]


def require_diffusers():
    try:
        import diffusers
    except ImportError:
        raise UserError(f"model=diffusers needs the diffusers package: {INSTALL}") from None
    return diffusers


def resolve(path: str, revision: str | None = None, download: bool = False) -> Path:
    """The local folder of `path`: the folder itself, or a Hub id's snapshot in the Hugging
    Face cache (fetched only with `download`, by `python -m rnsf.download`)."""
    local = Path(path).expanduser()
    if local.is_dir():
        return local
    if local.exists() or path.startswith((".", "/", "~")) or path.count("/") != 1:
        raise UserError(
            f"model.path={path} is neither a folder nor a Hugging Face Hub id (owner/name); "
            "set model.path to a UNet2DModel folder or a Hub id such as google/ddpm-cat-256"
        )
    require_diffusers()
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = snapshot_download(
            path, revision=revision, allow_patterns=HUB_PATTERNS, local_files_only=not download
        )
    except LocalEntryNotFoundError:
        raise UserError(
            f"{path} is not in the Hugging Face cache ({_cache_dir()}); fetch it with "
            f"python -m rnsf.download model=diffusers model.path={path}, or set model.path to "
            "a local folder"
        ) from None
    except Exception as err:  # network, authentication, unknown repository
        text = " ".join(str(err).split())[:300]
        raise UserError(f"cannot fetch {path} from the Hugging Face Hub ({text})") from None
    return Path(folder)


def _cache_dir() -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    return str(HF_HUB_CACHE)


def model_folders(folder: Path) -> tuple[Path, Path | None]:
    """(UNet folder, scheduler config file or None) of a model or pipeline folder."""
    if (folder / "unet" / "config.json").is_file():
        scheduler = folder / "scheduler" / "scheduler_config.json"
        return folder / "unet", scheduler if scheduler.is_file() else None
    if (folder / "config.json").is_file():
        scheduler = folder / "scheduler_config.json"
        return folder, scheduler if scheduler.is_file() else None
    raise UserError(
        f"{folder} holds no UNet2DModel (config.json, or unet/config.json in a pipeline); "
        "point model.path at a diffusers model folder"
    )


def check_scheduler(config: dict, where: str) -> None:
    """Refuse a scheduler config that is not the ε-prediction, linear-β, 1,000-step diffusion
    the samplers run on, naming what differs."""
    problems = []
    kind = config.get("prediction_type", "epsilon")
    if kind != "epsilon":
        problems.append(f"prediction_type {kind} (the samplers need epsilon)")
    if config.get("trained_betas") is not None:
        problems.append("trained_betas (a custom β table)")
    elif config.get("beta_schedule", "linear") != EXPECTED["beta_schedule"]:
        problems.append(f"beta_schedule {config.get('beta_schedule')} (the samplers need linear)")
    else:
        for key in ("beta_start", "beta_end"):
            value = config.get(key, EXPECTED[key])
            if not math.isclose(float(value), EXPECTED[key], rel_tol=1e-6):
                problems.append(f"{key} {value} (the samplers need {EXPECTED[key]})")
    steps = config.get("num_train_timesteps", NUM_TIMESTEPS)
    if steps != NUM_TIMESTEPS:
        problems.append(f"num_train_timesteps {steps} (the samplers need {NUM_TIMESTEPS})")
    if config.get("rescale_betas_zero_snr"):
        problems.append("rescale_betas_zero_snr (zero terminal SNR)")
    if problems:
        raise UserError(
            f"{where} describes another diffusion: {'; '.join(problems)}; rnsf's samplers run "
            "ε-prediction on linear β from 1e-4 to 0.02 over 1000 steps (set "
            "model.check_scheduler=false only if the network was trained that way)"
        )


class DiffusersUNet(nn.Module):
    """A `UNet2DModel` with rnsf's network signature: `net(x, t[, y]) -> output`."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet
        config = unet.config
        self.num_classes = config.num_class_embeds  # None: unconditional
        self.size_multiple = 2 ** (len(config.block_out_channels) - 1)

    def forward(self, x, t, y=None):
        return self.unet(x, t, class_labels=y).sample


def load_diffusers(
    path: str,
    *,
    name: str = "diffusers",
    revision: str | None = None,
    check_scheduler_config: bool = True,
    class_label: int | None = None,
    **runtime,
) -> PretrainedDenoiser:
    """The `UNet2DModel` at `path` (folder or cached Hub id), checked and frozen; `runtime`:
    the options of `ExecutionPolicy` (precision, channels_last, compile, checkpointing)."""
    policy = ExecutionPolicy(name=name, **runtime)
    require_diffusers()
    from diffusers import UNet2DModel

    folder = resolve(str(path), revision)
    unet_dir, scheduler = model_folders(folder)
    if check_scheduler_config:
        if scheduler is None:
            raise UserError(
                f"{folder} has no scheduler_config.json, so rnsf cannot check that the network "
                "predicts ε on linear β over 1000 steps; add it, or set "
                "model.check_scheduler=false if it does"
            )
        check_scheduler(json.loads(scheduler.read_text()), str(scheduler))
    config = json.loads((unet_dir / "config.json").read_text())
    if config.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise UserError(
            f"{unet_dir} holds a {config['_class_name']}, not a UNet2DModel (pixel-space, "
            "unconditioned or class-conditioned); latent and text-conditioned UNets do not fit"
        )
    try:  # safetensors first; diffusers reads .bin files with weights_only torch.load
        unet, info = UNet2DModel.from_pretrained(
            unet_dir, low_cpu_mem_usage=False, output_loading_info=True
        )
    except (OSError, ValueError, RuntimeError) as err:
        text = " ".join(str(err).split())[:300]
        raise UserError(f"cannot load the UNet2DModel in {unet_dir} ({text})") from None
    # diffusers initialises missing weights at random with a warning; rnsf refuses instead
    wrong = {k: v for k, v in info.items() if v and k != "error_msgs"}
    if wrong or info.get("error_msgs"):
        parts = [
            f"{len(v)} {k.replace('_', ' ')} ({', '.join(map(str, v[:3]))})"
            for k, v in wrong.items()
        ]
        raise UserError(
            f"the weights in {unet_dir} do not fit its config.json: {'; '.join(parts)}; "
            "the folder is incomplete or of another model"
        )
    size = unet.config.sample_size
    native = size if isinstance(size, int) else None
    return PretrainedDenoiser(
        DiffusersUNet(unet),
        name=name,
        native_size=native,
        class_label=class_label,
        policy=policy,
    )


load_diffusers.config_schema = RUNTIME_SCHEMA
