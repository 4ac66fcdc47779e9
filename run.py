"""Restore images with a frozen diffusion prior (the `rnsf` command, from a checkout).

python run.py [-m] [group=option ...] [key=value ...]
"""

from rnsf.app import main

if __name__ == "__main__":
    main()
