"""rnsf's submitit launchers (Hydra finds launchers only in its `hydra_plugins` package)."""
