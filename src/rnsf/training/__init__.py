"""Training of the built-in prior (`python train.py`)."""
