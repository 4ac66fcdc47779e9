"""The Lightning engine: RestorationModule and the job runner."""
