"""Seconds per image of pinv, ddnm and rnsf on the built-in prior, and the sampler's overhead.
The code is `rnsf.bench.builtin` (`python -m rnsf.bench.builtin`); the GPU benchmark of the
pretrained networks and every method is `python -m rnsf.bench`."""

from rnsf.bench.builtin import main

if __name__ == "__main__":
    main()
