"""`python -m rnsf.bench`: how close the networks and samplers come to the chip's limit.

Measures, on one device, the matmul ceilings (fp32, bf16, fp16), the FLOPs of each preset's
forward pass (`torch.utils.flop_counter`), the forward time of the networks for every
precision × batch × compile setting (TFLOP/s and % of the ceiling), the throughput and
sampler overhead of the restoration methods at 256², and DPS's step cost and memory. It prints
a Markdown table and writes the figures as JSON. Networks have random weights: speed does not
depend on them. `--smoke` runs everything at reduced width on the CPU in seconds (a check of
the plumbing, never a timing).
"""

from rnsf.bench.cli import main, run

__all__ = ["main", "run"]
