"""`python -m rnsf ...`: the `rnsf` command (`rnsf.app`)."""

from rnsf.app import main

main()
