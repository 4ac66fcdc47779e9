"""rnsf's submitit launchers (`hydra/launcher=submitit_slurm`, `submitit_local`): the plugin's,
with failed jobs that end as failed and a sweep that names them (rnsf.engine.sweep_launcher).
Hydra takes launchers only from the `hydra_plugins` package, hence this module."""

from hydra_plugins.hydra_submitit_launcher import submitit_launcher

from rnsf.engine.sweep_launcher import ReportFailures


class SlurmLauncher(ReportFailures, submitit_launcher.SlurmLauncher):
    """hydra/launcher=submitit_slurm"""


class LocalLauncher(ReportFailures, submitit_launcher.LocalLauncher):
    """hydra/launcher=submitit_local"""
