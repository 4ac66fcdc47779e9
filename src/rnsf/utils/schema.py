"""The declared types and ranges of the configuration's knobs, checked once the config is composed.

`SCHEMA` maps a dotted key (`method.steps`) to its `Spec`; `check_config` checks every key of a
composed config that the schema names, before anything is instantiated or written, and raises a
UserError with one line (`method.steps must be an integer >= 1, got 'abc'; ...`). Keys that the
schema does not name pass through unchecked, so a group option of your own (a method, an
operator, a dataset) works with any knobs. Your class can also declare its own: a config node
whose `_target_` is a class with a `config_schema` attribute ({"alpha": Float(0, 1), ...}) has
those keys checked too, relative to the node (its entries override the table's).

What a value means beyond its type and range (an SSD step count without a preset split, a
knot list) is still checked by the class that takes it, whose ValueError is one line as well.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from omegaconf import DictConfig, ListConfig, OmegaConf

from rnsf.utils.errors import UserError


class Spec:
    """A knob's type and range; `nullable` admits null."""

    def __init__(self, nullable: bool = False) -> None:
        self.nullable = nullable

    def check(self, value) -> str | None:
        """None when `value` fits, else what it must be ("an integer in [1, 1000]")."""
        if value is None:
            return None if self.nullable else self.expected()
        return None if self.fits(value) else self.expected()

    def fits(self, value) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def expected(self) -> str:
        return self.describe() + (" or null" if self.nullable else "")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Int(Spec):
    """An integer in [low, high] (either bound may be None)."""

    def __init__(self, low: int | None = None, high: int | None = None, nullable=False) -> None:
        super().__init__(nullable)
        self.low, self.high = low, high

    def fits(self, value) -> bool:
        return (
            _is_int(value)
            and (self.low is None or value >= self.low)
            and (self.high is None or value <= self.high)
        )

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"an integer in [{self.low}, {self.high}]"
        if self.low is not None:
            return f"an integer >= {self.low}"
        return "an integer"


class Float(Spec):
    """A finite number in [low, high], or (low, high] with `open_low`."""

    def __init__(self, low=None, high=None, nullable=False, open_low=False) -> None:
        super().__init__(nullable)
        self.low, self.high, self.open_low = low, high, open_low

    def fits(self, value) -> bool:
        if not (_is_int(value) or isinstance(value, float)) or not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self) -> str:
        left = "(" if self.open_low else "["
        if self.low is not None and self.high is not None:
            return f"a number in {left}{self.low:g}, {self.high:g}]"
        if self.low is not None:
            return f"a number {'>' if self.open_low else '>='} {self.low:g}"
        return "a number"


class Bool(Spec):
    def fits(self, value) -> bool:
        return isinstance(value, bool)

    def describe(self) -> str:
        return "true or false"


class Choice(Spec):
    """One of `options` (compared with their type: 2048 is not '2048')."""

    def __init__(self, *options, nullable: bool = False) -> None:
        super().__init__(nullable)
        self.options = options

    def fits(self, value) -> bool:
        return any(o == value and type(o) is type(value) for o in self.options)

    def describe(self) -> str:
        return "one of " + ", ".join(str(o) for o in self.options)


class Either(Spec):
    """A value that fits one of `specs` (e.g. `auto` or an integer >= 1)."""

    def __init__(self, *specs: Spec, nullable: bool = False) -> None:
        super().__init__(nullable)
        self.specs = specs

    def fits(self, value) -> bool:
        return any(spec.fits(value) for spec in self.specs)

    def describe(self) -> str:
        return " or ".join(spec.describe() for spec in self.specs)


class Str(Spec):
    """A non-empty string: a path or a name."""

    def fits(self, value) -> bool:
        return isinstance(value, str) and bool(value)

    def describe(self) -> str:
        return "a non-empty string"


class Pairs(Spec):
    """A non-empty list of [a, b] number pairs in [low, high] (a piecewise schedule's knots)."""

    def __init__(self, low: float = 0.0, high: float = 1.0, nullable: bool = False) -> None:
        super().__init__(nullable)
        self.number = Float(low, high)

    def fits(self, value) -> bool:
        return (
            isinstance(value, list)
            and bool(value)
            and all(
                isinstance(pair, list) and len(pair) == 2 and all(map(self.number.fits, pair))
                for pair in value
            )
        )

    def describe(self) -> str:
        low, high = self.number.low, self.number.high
        return f"a list of [s, value] pairs with numbers in [{low:g}, {high:g}]"


class CompileOption(Spec):
    """A `model.compile` value: true, false, auto, an inductor mode or a registered
    `torch.compile` backend (`rnsf.denoisers.execution.compile_problem`)."""

    def fits(self, value) -> bool:
        from rnsf.denoisers.execution import compile_problem

        return compile_problem(value) is None

    def describe(self) -> str:
        from rnsf.denoisers.execution import compile_expected

        return compile_expected()


class Lazy(Spec):
    """One of the values a library accepts, asked of it when a config is checked: `options` is a
    function returning them (compared with their type, as `Choice`)."""

    def __init__(self, options, nullable: bool = False) -> None:
        super().__init__(nullable)
        self.options = options

    def fits(self, value) -> bool:
        return Choice(*self.options()).fits(value)

    def describe(self) -> str:
        return Choice(*self.options()).describe()


class IntList(Spec):
    """A non-empty list of distinct integers >= `low` (device indices)."""

    def __init__(self, low: int = 0, nullable: bool = False) -> None:
        super().__init__(nullable)
        self.low = low

    def fits(self, value) -> bool:
        return (
            isinstance(value, list)
            and bool(value)
            and all(_is_int(v) and v >= self.low for v in value)
            and len(set(value)) == len(value)
        )

    def describe(self) -> str:
        return f"a list of distinct integers >= {self.low}"


def lightning_precisions() -> list:
    """The `Trainer(precision=…)` values Lightning accepts."""
    import typing

    from lightning.pytorch.trainer.connectors.accelerator_connector import _PRECISION_INPUT

    def flatten(hint) -> list:
        args = typing.get_args(hint)
        return [v for a in args for v in flatten(a)] if args else [hint]

    return flatten(_PRECISION_INPUT)


def lightning_accelerators() -> list[str]:
    """The `Trainer(accelerator=…)` names Lightning knows (`auto`, `gpu` and the registry's)."""
    from lightning.pytorch.accelerators import AcceleratorRegistry

    return ["auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators())]


UNIT = Float(0.0, 1.0)
STEPS = Int(1, 1000)

#: how a network runs (`rnsf.denoisers.execution.ExecutionPolicy`): the `model.*` keys, and the
#: keys of every loader that takes them (`model.net.*`, through the loaders' `config_schema`)
RUNTIME_SCHEMA: dict[str, Spec] = {
    "precision": Choice("auto", "fp32", "fp16", "bf16"),
    "compile": CompileOption(),
    "checkpointing": Bool(),
    "channels_last": Bool(),
}

#: the declared knobs of rnsf's own config groups (keys absent from a config are skipped)
SCHEMA: dict[str, Spec] = {
    # top level
    "mode": Choice("test", "predict"),
    "seed": Int(0),
    "save_images": Bool(),
    "grid_images": Int(0),
    # dataset
    "dataset.root": Str(nullable=True),
    "dataset.image_size": Int(1, nullable=True),
    "dataset.resize": Choice("center_crop", "resize", "none"),
    "dataset.interpolation": Choice("bilinear", "bicubic", "lanczos", "nearest"),
    "dataset.alpha": Choice("white", "black", "refuse"),
    "dataset.list_file": Str(nullable=True),
    "dataset.labels_file": Str(nullable=True),
    "dataset.limit": Int(1, nullable=True),
    "dataset.num_images": Int(1, nullable=True),
    "dataset.batch_size": Either(Choice("auto"), Int(1)),
    "dataset.num_workers": Int(0),
    "dataset.measurements": Bool(),
    "dataset.split": Choice("val", "test", nullable=True),
    "dataset.val_images": Int(1, nullable=True),
    # task: the noise and the operators' parameters
    "task.sigma": Float(0.0),
    "task.operator.factor": Int(1),
    "task.operator.ratio": Int(1),
    "task.operator.perm_seed": Int(),
    "task.operator.sigma": Float(0.0, open_low=True),
    "task.operator.kernel_size": Int(1),
    "task.operator.taps": Int(1),
    "task.operator.zero_below": Float(0.0),
    "task.operator.exact_forward": Bool(),
    "task.operator.size": Float(0.0, 1.0, open_low=True),
    "task.operator.keep": UNIT,
    "task.operator.path": Str(),
    # method
    "method.steps": STEPS,
    "method.eta": UNIT,
    "method.eta_b": UNIT,
    "method.travel_length": Int(1),
    "method.travel_repeat": Int(1),
    "method.scale": Float(0.0, nullable=True),
    "method.scale_inpainting": Float(0.0),
    "method.scale_default": Float(0.0),
    "method.forward_steps": Int(2, 1000, nullable=True),
    "method.backward_steps": Int(1, 1000, nullable=True),
    "method.insert_step": Int(1, 999, nullable=True),
    "method.noise_eta": Float(0.0, 1.0, nullable=True),
    "method.ddim_eta": UNIT,
    "method.consistency_until": Int(0, 1000),
    # schedule (RNSF's lambda_t)
    "schedule.reverse": Bool(),
    "schedule.level": UNIT,
    "schedule.start": UNIT,
    "schedule.end": UNIT,
    "schedule.knots": Pairs(0.0, 1.0),
    "schedule.rate": Float(0.0, open_low=True),
    "schedule.break_1": UNIT,
    "schedule.level_1": UNIT,
    "schedule.break_2": UNIT,
    "schedule.level_2": UNIT,
    # objective (a sweeper's number; the weights are checked by rnsf.ablation.Objective)
    "objective.direction": Choice("maximize", "minimize"),
    # model
    **{f"model.{key}": spec for key, spec in RUNTIME_SCHEMA.items()},
    "model.class_label": Int(0, 999, nullable=True),
    "model.classifier_scale": Float(0.0),
    "model.classifier.checkpoint": Str(),
    "model.checkpoint": Str(nullable=True),
    "model.path": Str(),
    "model.revision": Str(nullable=True),
    "model.check_scheduler": Bool(),
    # trainer: the keys users set (Lightning's own values)
    "trainer.accelerator": Lazy(lightning_accelerators),
    "trainer.devices": Either(Choice("auto", -1), Int(1), IntList(0)),
    "trainer.num_nodes": Int(1),
    "trainer.precision": Lazy(lightning_precisions),
    # metrics
    "metrics.protocol": Choice("float", "uint8"),
    "metrics.lpips.enabled": Bool(),
    "metrics.lpips.required": Bool(),
    "metrics.lpips.net": Choice("alex", "vgg", "squeeze"),
    "metrics.fid.enabled": Bool(),
    "metrics.fid.required": Bool(),
    "metrics.fid.dims": Choice(64, 192, 768, 2048),
    "metrics.kid.enabled": Bool(),
    "metrics.kid.required": Bool(),
    "metrics.kid.subset_size": Int(2),
    "metrics.kid.subsets": Int(1),
    # logger
    "logger.wandb.mode": Choice("auto", "online", "offline", "disabled"),
    "logger.wandb.log_frames": Int(0),
    "logger.wandb.frame_every": Int(1, nullable=True),
}


def check_config(cfg: DictConfig, schema: dict[str, Spec] | None = None) -> None:
    """Raise one UserError for the first knob of `cfg` whose value does not fit its declared
    type and range (the table `schema`, default `SCHEMA`, and the `config_schema` of the classes
    the config names)."""
    for key, spec in _specs(cfg, SCHEMA if schema is None else schema):
        value = _value(cfg, key)
        if value is _ABSENT:
            continue
        problem = spec.check(value)
        if problem is not None:
            shown = "null" if value is None else repr(value) if isinstance(value, str) else value
            raise UserError(f"{key} must be {problem}, got {shown}")


_ABSENT = object()


def _value(cfg: DictConfig, key: str):
    """The resolved value at `key`, or _ABSENT when the config does not have it (or it needs
    Hydra's run-time resolvers, outside a job). An interpolation that cannot be resolved
    (`${model.nope}`, a resolver nobody registered) is a UserError naming it."""
    node = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return _ABSENT
        child = node._get_node(part)
        if child is None or child._is_missing():
            return _ABSENT
        try:
            node = node[part]
        except Exception as err:
            if _needs_hydra(err):  # `${hydra:…}` outside a job: resolved when the job runs
                return _ABSENT
            raw = child._value() if not isinstance(child, DictConfig | ListConfig) else "?"
            text = " ".join(str(err).splitlines()[0].split())
            raise UserError(
                f"{key}={raw} cannot be resolved ({type(err).__name__}: {text}); fix or remove "
                "the interpolation"
            ) from None
    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _needs_hydra(err: Exception) -> bool:
    """True for the error of a `${hydra:…}` interpolation resolved outside Hydra's job."""
    from hydra.core.hydra_config import HydraConfig

    return not HydraConfig.initialized() and "HydraConfig was not set" in str(err)


def _specs(cfg: DictConfig, schema: dict[str, Spec]) -> Iterator[tuple[str, Spec]]:
    """The table's entries, overridden and extended by the `config_schema` of the classes named
    by `_target_` anywhere in the config."""
    merged = dict(schema)
    for prefix, target in _targets(cfg):
        extra = getattr(_locate(target), "config_schema", None)
        if isinstance(extra, dict):
            merged.update({f"{prefix}{key}": spec for key, spec in extra.items()})
    yield from merged.items()


def _targets(node, prefix: str = "") -> Iterator[tuple[str, str]]:
    if not isinstance(node, DictConfig):
        return
    for key in node:
        child = node._get_node(key)
        if key == "_target_" and not child._is_missing() and isinstance(child._value(), str):
            yield prefix, child._value()
        elif isinstance(child, DictConfig):
            yield from _targets(child, f"{prefix}{key}.")


def _locate(target: str):
    from hydra.utils import get_object

    try:
        return get_object(target)
    except Exception:  # a target that does not import fails later, at instantiation
        return None
