# conf/ is also the package rnsf.conf (src/rnsf/conf links here), so that an installed rnsf
# ships its configs and Hydra finds them as pkg://rnsf.conf.
