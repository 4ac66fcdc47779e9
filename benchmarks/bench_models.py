"""Keys, parameters and forward time of the pretrained presets; `--save-random DIR` writes
random weights in the published format. The code is `rnsf.bench.presets`
(`python -m rnsf.bench.presets`); the GPU benchmark is `python -m rnsf.bench`."""

from rnsf.bench.presets import main

if __name__ == "__main__":
    main()
