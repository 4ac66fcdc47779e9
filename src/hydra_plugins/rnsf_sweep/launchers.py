"""`hydra/launcher=submitit_local` and `submitit_slurm`: the submitit plugin's launchers, ending a
sweep with one line per unfinished job (`rnsf.engine.sweep`)."""

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    LocalLauncher as PluginLocalLauncher,
)
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    SlurmLauncher as PluginSlurmLauncher,
)

from rnsf.engine.sweep import SummarisedLaunch


class LocalLauncher(SummarisedLaunch, PluginLocalLauncher):
    """submitit on this machine."""


class SlurmLauncher(SummarisedLaunch, PluginSlurmLauncher):
    """submitit on SLURM: the sweep is one array."""
