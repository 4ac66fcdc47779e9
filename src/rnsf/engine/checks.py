"""Up-front checks of a job (do the operator and the network take every image size of the
dataset? the advice of each message follows the dataset's resize policy; can the method restore
this task: `Method.check`, and what will it use: `Method.describe`), and the note that tells a
user what the built-in prior can do on their own images."""

from __future__ import annotations

import torch

from rnsf.operators.base import LinearOperator
from rnsf.utils.errors import UserError
from rnsf.utils.random import image_generators


def check_sizes(cfg, datamodule, task, denoiser, method=None, tiling=None) -> None:
    """Fail before any work when the operator or the network cannot take an image of the dataset
    (every distinct size is checked: with `dataset.resize=none` the files may differ). With a
    `tiling` layer the network sees windows, and the layer checks each size itself."""
    dataset = datamodule.dataset
    sizes = dataset.sizes()
    seen: set[tuple[int, int]] = set()
    for index, size in enumerate(sizes):
        if size in seen:
            continue
        seen.add(size)
        if tiling is not None:
            _check_tiled(cfg, task, denoiser, method, tiling, *size)
            continue
        problem = _size_problem(cfg, task, denoiser, *size)
        if problem is None:
            continue
        reason, advice = problem
        if dataset.resize == "none":
            native = getattr(denoiser, "native_size", None) if denoiser is not None else None
            fit = native or _fitting_size(cfg, task, denoiser, min(size))
            target = f" dataset.image_size={fit}" if fit else " and dataset.image_size"
            where = f"{dataset.paths[index]}: " if len(seen) > 1 or index > 0 else ""
            tile = ", or tiling=mask_shift to restore them at their size" if native else ""
            raise UserError(
                f"{where}{reason}; the files are used as they are (dataset.resize=none ignores "
                f"dataset.image_size): crop or resize them, or set dataset.resize=center_crop"
                f"{target}{tile}"
            )
        raise UserError(f"{reason}; {advice}")


def _check_tiled(cfg, task, denoiser, method, tiling, height: int, width: int) -> None:
    height, width = _x_size(cfg, task, height, width)
    try:
        task.operator.check_image_size(height, width)
    except ValueError as err:
        raise UserError(str(err)) from None
    tiling.check(method, task.operator, height, width, denoiser)


def check_batches(datamodule) -> None:
    """With `dataset.resize=none` the files may differ in size, and a batch stacks images of one
    size only: fail up front, naming two files, rather than in the middle of the job."""
    dataset = datamodule.dataset
    if datamodule.batch_size == 1 or dataset.resize != "none":  # "auto" may stack several
        return
    if getattr(datamodule, "batches_by_size", False):
        return  # the data module groups the images by size
    sizes = dataset.sizes()
    other = next((i for i, size in enumerate(sizes) if size != sizes[0]), None)
    if other is None:
        return
    (h0, w0), (h1, w1) = sizes[0], sizes[other]
    raise UserError(
        f"the images differ in size ({dataset.paths[0].name} {h0}x{w0}, "
        f"{dataset.paths[other].name} {h1}x{w1}) and dataset.batch_size={datamodule.batch_size} "
        "stacks several in a batch; set dataset.batch_size=1, or bring them to one size with "
        "dataset.resize=center_crop (or resize) and dataset.image_size"
    )


def check_labels(cfg, datamodule, denoiser) -> None:
    """A class-conditional model (or classifier guidance) needs every image's class."""
    if getattr(denoiser, "needs_labels", False) and not datamodule.dataset.has_labels:
        raise UserError(
            f"model {cfg.model.name} needs each image's ImageNet class and dataset "
            f"{datamodule.name} gives none for some images; use dataset=imagenet_1k, a list or "
            "dataset.labels_file of '<file> <class>' lines, or model.class_label=N for all images"
        )


def _x_size(cfg, task, height: int, width: int) -> tuple[int, int]:
    """The size of the image x restored from an item of this size (in predict mode the item is
    the measurement y)."""
    if cfg.mode != "predict":
        return height, width
    y = torch.zeros(1, 3, height, width)
    return tuple(task.operator.x_shape(task.operator.measurement_from_image(y).shape)[-2:])


def _size_problem(cfg, task, denoiser, height: int, width: int) -> tuple[str, str] | None:
    """(what is wrong, the advice of the message) for an item of this size, or None."""
    height, width = _x_size(cfg, task, height, width)
    try:
        task.operator.check_image_size(height, width)
        if denoiser is not None:
            denoiser.check_size(height, width)
    except ValueError as err:
        reason, _, advice = str(err).rpartition("; ")
        return (reason, advice) if reason else (advice, "set dataset.image_size")
    native = getattr(denoiser, "native_size", None) if denoiser is not None else None
    if native and (height, width) != (native, native):
        return (
            f"model {cfg.model.name} takes {native}x{native} images, the dataset gives "
            f"{height}x{width}",
            f"set dataset.image_size={native}",
        )
    return None


def _fitting_size(cfg, task, denoiser, largest: int) -> int | None:
    """The largest square side <= `largest` that the operator and the network take."""
    if cfg.mode == "predict":
        return None  # the measurement's size maps to x's through the operator: no simple advice
    for side in range(largest, 0, -1):
        if _size_problem(cfg, task, denoiser, side, side) is None:
            return side
    return None


#: printed under the summary when the built-in prior restored a folder of the user's own images
BUILTIN_PRIOR_NOTE = (
    "note: the built-in prior is a 5M-parameter network trained on 18 small photos, made for the "
    "demo set, wiring checks, tests and teaching; on photos of your own it can lose to A†y "
    "(compare with method=pinv); for real work use a pretrained model (README: Pretrained models)"
)


def builtin_prior_note(summary: dict) -> str | None:
    """The note for a job that ran the built-in prior (`model=tiny`) on images other than the
    demo set; None otherwise (and for A†y, which uses no prior)."""
    if summary.get("model") != "tiny" or summary.get("dataset") == "demo":
        return None
    if not summary.get("nfe"):
        return None
    return BUILTIN_PRIOR_NOTE


# -- the method against the task ----------------------------------------------------------
def job_operator(cfg, datamodule, task) -> LinearOperator:
    """The task's operator as `restore` gets it for the job's first image: bound to its size
    and its random draws (masks)."""
    height, width = _x_size(cfg, task, *datamodule.dataset.first_size())
    return task.operator.bind((1, 3, height, width), image_generators(cfg.seed, [0], "cpu"))


def check_method(method, task, operator: LinearOperator) -> dict:
    """What the method needs (`Method.check`: SVD, noise) against the job's operator and noise,
    its error naming the task; returns what it will use (`Method.describe`)."""
    try:
        method.check(operator, task.sigma_model)
    except UserError as err:
        raise UserError(f"task {task.name}: {err}") from None
    return method.describe(operator)


def precheck(cfg) -> None:
    """The method against the task, on a composed config before Hydra starts (nothing built
    but the data listing, the task and the method), so that an incompatible pair stops the
    command before any folder exists. Sizes are the engine's (`check_sizes`, with advice)."""
    from hydra.utils import instantiate

    datamodule, task, method = (instantiate(cfg[key]) for key in ("dataset", "task", "method"))
    height, width = _x_size(cfg, task, *datamodule.dataset.first_size())
    try:
        task.operator.check_image_size(height, width)
    except ValueError:
        return  # the engine's size check says it, with the advice that fits the dataset
    check_method(method, task, job_operator(cfg, datamodule, task))
