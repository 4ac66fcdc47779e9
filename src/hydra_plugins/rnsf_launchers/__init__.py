"""rnsf's submitit launchers (`hydra/launcher=submitit_slurm`, `submitit_local`): the plugin's,
with jobs that fail as failed jobs and a sweep that ends with one line per unfinished job
(rnsf.engine.sweep). Hydra takes launchers only from the `hydra_plugins` package, hence this
module."""

from hydra_plugins.hydra_submitit_launcher import submitit_launcher

from rnsf.engine.sweep import ReportFailures


class SlurmLauncher(ReportFailures, submitit_launcher.SlurmLauncher):
    """hydra/launcher=submitit_slurm: the sweep is one array."""


class LocalLauncher(ReportFailures, submitit_launcher.LocalLauncher):
    """hydra/launcher=submitit_local"""
