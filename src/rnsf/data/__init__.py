"""Datasets: the built-in demo, any folder of images, and folders of measurements."""

from rnsf.data.datamodule import RestorationDataModule
from rnsf.data.folder import ImageFolder

__all__ = ["ImageFolder", "RestorationDataModule"]
