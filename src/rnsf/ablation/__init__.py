"""λ-schedule ablations that search: the objective a job returns to a sweeper, and the
evaluation of the tuned schedule on the test split after an Optuna sweep."""

from rnsf.ablation.evaluate import TestSplitEvaluation
from rnsf.ablation.objective import DIRECTIONS, METRIC_DIRECTIONS, Objective

__all__ = ["DIRECTIONS", "METRIC_DIRECTIONS", "Objective", "TestSplitEvaluation"]
