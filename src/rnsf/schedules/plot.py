"""Plot λ(s) of every schedule config into one PNG:  python -m rnsf.schedules.plot [out.png]."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from rnsf.schedules.lambdas import LambdaSchedule

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "schedule"  # rnsf.conf


def load_schedule_configs(conf_dir: Path = CONF_DIR) -> dict[str, LambdaSchedule]:
    """Every schedule of the `schedule` config group, instantiated by name."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    return {
        path.stem: instantiate(OmegaConf.load(path)) for path in sorted(conf_dir.glob("*.yaml"))
    }


def plot_schedules(schedules: dict[str, LambdaSchedule], out: Path, reversed_too: bool = True):
    """λ against t/T (time runs right to left, as sampling does) for each schedule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = np.linspace(0, 1, 501)
    fig, axes = plt.subplots(1, 2 if reversed_too else 1, figsize=(11 if reversed_too else 6, 4))
    axes = np.atleast_1d(axes)
    for ax, rev in zip(axes, (False, True), strict=False):
        for name, schedule in schedules.items():
            sched = type(schedule)(**{**vars(schedule), "reverse": schedule.reverse ^ rev})
            ax.plot(s, [sched(v) for v in s], label=name)
        ax.set(xlabel="s = t / T  (sampling runs from 1 to 0)", ylabel="λ", ylim=(-0.05, 1.05))
        ax.set_title("reverse: true" if rev else "as configured")
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else Path("outputs/schedules.png")
    print(plot_schedules(load_schedule_configs(), out))


if __name__ == "__main__":
    main()
