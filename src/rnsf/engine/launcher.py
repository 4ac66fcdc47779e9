"""The one place rnsf depends on a private Lightning API: how `strategy="ddp"` starts its ranks.

Lightning starts the other ranks of DDP by running the script again with the first process's
command line (`_SubprocessScriptLauncher`), which is wrong inside a Hydra job (see
`rnsf.engine.distributed`); it offers no public hook for the command. `JobDDPStrategy` swaps
in `JobLauncher`, which starts each rank with `distributed.worker_command()` instead. Lightning
versions this was checked against: `TESTED_LIGHTNING` (tests/test_distributed.py fails loudly on
any other, so that an upgrade is checked here first).
"""

from __future__ import annotations

import os
import subprocess

from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

#: the Lightning releases whose `_SubprocessScriptLauncher` this module was checked against
TESTED_LIGHTNING = ("2.4", "2.5", "2.6")


class JobDDPStrategy(DDPStrategy):
    """`DDPStrategy` whose extra ranks are copies of the current Hydra job."""

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if isinstance(self._launcher, _SubprocessScriptLauncher):
            self._launcher = JobLauncher(
                self.cluster_environment, self.num_processes, self.num_nodes
            )


class JobLauncher(_SubprocessScriptLauncher):
    """Starts local ranks 1 … n-1 with `worker_command()`; without Hydra, as Lightning does."""

    def _call_children_scripts(self) -> None:
        from hydra.core.hydra_config import HydraConfig

        from rnsf.engine.distributed import worker_command

        if not HydraConfig.initialized():
            super()._call_children_scripts()
            return
        self._check_can_spawn_children()
        env = self.cluster_environment
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        os.environ["NODE_RANK"] = str(env.node_rank())
        os.environ["LOCAL_RANK"] = str(env.local_rank())
        os.environ["WORLD_SIZE"] = str(self.num_processes * self.num_nodes)
        command, cwd = worker_command()
        for local_rank in range(1, self.num_processes):
            child_env = {**os.environ, "LOCAL_RANK": str(local_rank)}
            self.procs.append(subprocess.Popen(command, env=child_env, cwd=cwd))
