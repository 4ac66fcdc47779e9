"""How a frozen network runs: precision, memory layout, compilation (the execution policy).

Every denoiser type runs its network through one `ExecutionPolicy`: the pretrained ADM and DDPM
networks, a diffusers UNet and the built-in prior (when it is not on its exact, eager default).
The run-time options (precision, channels_last, compile, checkpointing: the keywords of
`ExecutionPolicy`, declared for the config schema as `rnsf.utils.schema.RUNTIME_SCHEMA`) are
defined here once; every loader passes them on unchanged (`ExecutionPolicy(**runtime)`).

What the policy holds is how to run, never what to compute: the class labels of a batch are
passed with each call (`Denoiser.eps(x, t, classes=…)`).

Compilation has a safe fallback. `compile=auto` tries `torch.compile` on a tiny function when
the job starts (`check`), and again on the network's first call; if either fails (no Triton, no
C compiler, an inductor error), the network runs eager, one warning line names the cause, and
metrics.json records `compile: "eager (fallback: <cause>)"`. An explicit `compile=true` or a
named mode or backend that fails at start-up stops the job there, in one line, before anything
is written.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable

import torch
from torch import nn

from rnsf.utils.errors import UserError

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: torch.compile modes (inductor); `auto` picks reduce-overhead (CUDA graphs) on a GPU
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: the modes in which inductor records CUDA graphs: outputs live in the graph's memory pool
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
COMPILE_WORDS = ("auto", "true", "false", "on", "off", "none")
COMPILE_OFF = (None, False, "false", "off", "none")
_ON = (True, "true", "on")
#: what `compile=auto` is on each device type; a device type not listed runs eager
AUTO_COMPILE = {"cuda": {"backend": "inductor", "mode": "reduce-overhead"}}


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto`: bf16 on a GPU that computes it natively (Ampere and later), fp16 on older GPUs
    (V100, T4: their bf16 is emulated, and slow), fp32 elsewhere."""
    if precision != "auto":
        return precision
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"


def resolve_compile(option: bool | str | None, device: torch.device) -> dict | None:
    """The `torch.compile` arguments of a `compile` option, or None for eager.

    false: eager. true / `default` / another mode name: inductor in that mode. `auto`: the
    device type's entry of `AUTO_COMPILE` (inductor with CUDA graphs on a GPU), eager elsewhere.
    Any other string is a backend name (`eager`, `aot_eager`, …) in its default mode.
    """
    if option in COMPILE_OFF:
        return None
    if option == "auto":
        auto = AUTO_COMPILE.get(device.type)
        return dict(auto) if auto is not None else None
    if option in _ON:
        return {"backend": "inductor", "mode": "default"}
    if option in COMPILE_MODES:
        return {"backend": "inductor", "mode": option}
    return {"backend": str(option), "mode": None}


def compile_backends() -> list[str]:
    """The `torch.compile` backends registered now (`torch._dynamo.list_backends`)."""
    import torch._dynamo

    return sorted(torch._dynamo.list_backends(exclude_tags=()))


def compile_problem(option) -> str | None:
    """None when `option` is a `compile` value rnsf can run, else what it must be."""
    if option in COMPILE_OFF or option in _ON or option in ("auto", *COMPILE_MODES):
        return None
    if isinstance(option, str) and option in compile_backends():
        return None
    return compile_expected()


def compile_expected() -> str:
    """What a `compile` value must be, with the backends registered now."""
    backends = [b for b in compile_backends() if "TESTING" not in b]
    return (
        f"true or false or one of {', '.join(('auto', *COMPILE_MODES))} or a torch.compile "
        f"backend ({', '.join(backends)})"
    )


def failure_cause(err: BaseException) -> str:
    """`Type: first line` of the innermost cause of a compilation error (dynamo wraps a
    backend's exception as `BackendCompilerFailed`), at most 200 characters."""
    seen = set()
    while id(err) not in seen:
        seen.add(id(err))
        inner = getattr(err, "inner_exception", None) or err.__cause__
        if not isinstance(inner, BaseException):
            break
        err = inner
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return text[:200]


def _probe_function(a: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.silu(a) * 2 + 1


class ExecutionPolicy:
    """How one network runs: its run-time options and what they have led to so far.

    precision: `auto` (bf16 on a GPU that has it natively, fp16 on older GPUs, fp32 on the CPU),
        `fp32` (exact), or `fp16` / `bf16` autocast. On the CPU, `fp16` falls back to fp32 with
        a warning; `bf16` uses CPU autocast.
    channels_last: NHWC memory layout for the network and its input on a GPU.
    compile: `torch.compile` the network on first use (`resolve_compile`): `auto` (CUDA graphs
        on a GPU, eager on the CPU; plain inductor when the first call needs gradients, as in
        DPS; eager with a warning when compilation fails), false, true, a mode name or a
        backend name. Shapes stay static: a batch smaller than the largest one seen is padded
        to it, so neither a last, short batch nor a new timestep (a tensor input) compiles
        again. The compiling calls' time is kept in `compile_seconds`.
    checkpointing: recompute each block's activations in the backward pass (DPS) instead of
        keeping them: less memory per image for ~1 more forward per step.
    """

    def __init__(
        self,
        *,
        precision: str = "fp32",
        channels_last: bool = True,
        compile: bool | str | None = False,
        checkpointing: bool = False,
        name: str = "model",
    ) -> None:
        if precision not in (*PRECISIONS, "auto"):
            raise UserError(
                f"model.precision={precision!r} is not supported; use one of "
                f"auto, {', '.join(PRECISIONS)}"
            )
        problem = compile_problem(compile)
        if problem is not None:
            raise UserError(f"model.compile={compile!r} is not supported; use {problem}")
        self.name = name
        self.precision = precision
        self.channels_last = bool(channels_last)
        self.compile = compile
        self.checkpointing = bool(checkpointing)
        self.compile_seconds: float | None = None
        self.compile_mode: str | None = None  # the mode (or backend) in use once compiled
        self.fallback: str | None = None  # why `auto` runs eager after a failed compilation
        self._compiled: Callable | None = None
        self._backend: str | None = None
        self._batch = 0  # the batch size the compiled network was traced for
        self._nhwc = False
        self._warned = False

    def prepare(self, net: nn.Module) -> nn.Module:
        """Freeze `net` and switch on activation checkpointing when asked."""
        net = net.eval().requires_grad_(False)
        if self.checkpointing:
            if not hasattr(net, "checkpointing"):
                raise UserError(f"model {self.name} does not support model.checkpointing")
            net.checkpointing = True
        return net

    # -- what runs -----------------------------------------------------------------------------
    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        """The autocast dtype on `device`, or None for plain fp32."""
        precision = resolve_precision(self.precision, device)
        if precision == "fp32":
            return None
        if device.type == "cuda" or (device.type == "cpu" and precision == "bf16"):
            return PRECISIONS[precision]
        if not self._warned:
            warnings.warn(
                f"model.precision={precision} needs a GPU; {self.name} runs in fp32 on "
                f"{device.type}",
                stacklevel=4,
            )
            self._warned = True
        return None

    def uses_channels_last(self, device: torch.device) -> bool:
        """NHWC on a GPU, where cuDNN's convolutions prefer it; the CPU stays NCHW (exact)."""
        return self.channels_last and device.type == "cuda"

    def path(self, device: torch.device, grad: bool = False) -> dict | None:
        """The `torch.compile` arguments of the path the next call on `device` runs (`grad`:
        with gradients through the network), or None when it runs eager."""
        if self.fallback is not None:
            return None
        if self._compiled is not None:
            return {"backend": self._backend, "mode": self.compile_mode}
        options = resolve_compile(self.compile, device)
        if options is not None and self.compile == "auto" and grad:
            options["mode"] = "default"  # gradients through the network: no CUDA graphs
        return options

    def cuda_graphs(self, device: torch.device, grad: bool = False) -> bool:
        """True when the path that runs records CUDA graphs (`CUDA_GRAPH_MODES`)."""
        options = self.path(device, grad)
        return options is not None and options["mode"] in CUDA_GRAPH_MODES

    def describe(self, device: torch.device) -> dict:
        """What metrics.json records: the precision and compile mode in effect on `device`, and
        the compiling calls' seconds once they have run."""
        dtype = self.autocast_dtype(device)
        names = {v: k for k, v in PRECISIONS.items()}
        if self.fallback is not None:
            mode = f"eager (fallback: {self.fallback})"
        elif self.compile_mode is not None:
            mode = self.compile_mode
        else:
            options = resolve_compile(self.compile, device)
            mode = None if options is None else options["mode"] or options["backend"]
        return {
            "precision": names[dtype] if dtype is not None else "fp32",
            "compile": mode,
            "compile_seconds": self.compile_seconds,
        }

    # -- start-up check and fallback -----------------------------------------------------------
    def check(self, device: torch.device) -> None:
        """Compile and run a tiny function the way the network will be compiled on `device`, so
        that a missing compiler or backend shows before anything is written: a one-line
        UserError for an explicit option, the eager fallback (one warning line) for `auto`."""
        options = resolve_compile(self.compile, device)
        if options is None or self.fallback is not None:
            return
        mode = None if options["mode"] == "default" else options["mode"]
        try:
            probe = torch.compile(
                _probe_function, backend=options["backend"], mode=mode, dynamic=False
            )
            with torch.no_grad():
                probe(torch.ones(8, device=device))
        except Exception as err:  # any compiler error: the user sees its cause
            if self.compile != "auto":
                raise UserError(
                    f"model.compile={self.compile} cannot compile on {device.type} "
                    f"({failure_cause(err)}); install what it needs (a C++ compiler, Triton on "
                    "a GPU) or set model.compile=false"
                ) from None
            self._fall_back(err)

    def _fall_back(self, err: BaseException) -> None:
        self.fallback = failure_cause(err)
        self._compiled = None
        self.compile_mode = None
        log.warning(
            "model.compile=auto: torch.compile failed (%s); %s runs eager", self.fallback, self.name
        )

    # -- running -------------------------------------------------------------------------------
    def run(
        self, net: nn.Module, x: torch.Tensor, t: torch.Tensor, extra: dict, eager: bool = False
    ) -> torch.Tensor:
        """net(x, t, **extra) in float32, run as the options say (`eager`: uncompiled)."""
        device = x.device
        if self.uses_channels_last(device):
            if not self._nhwc:
                net.to(memory_format=torch.channels_last)
                self._nhwc = True
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = self.autocast_dtype(device)
        compiled = None if eager else self._compiled_net(net, device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            if compiled is None:
                out = net(x, t, **extra)
            else:
                out = self._run_compiled(net, compiled, x, t, extra)
        return out.float().contiguous()

    def _compiled_net(self, net: nn.Module, device: torch.device) -> Callable | None:
        if self._compiled is None:
            options = self.path(device, torch.is_grad_enabled())
            if options is None:
                return None
            self._backend = options["backend"]
            self.compile_mode = options["mode"] or options["backend"]
            mode = None if options["mode"] == "default" else options["mode"]
            self._compiled = torch.compile(
                net, backend=options["backend"], mode=mode, dynamic=False
            )
        return self._compiled

    def _run_compiled(self, net, compiled: Callable, x, t, extra: dict) -> torch.Tensor:
        """The compiled network on a batch padded to the traced size (static shapes); on a
        compiling call that fails under `auto`, the eager network."""
        batch = x.shape[0]
        first = self.compile_seconds is None or batch > self._batch
        traced = max(self._batch, batch)
        if batch < traced:
            pad = traced - batch
            x = torch.cat([x, x[-1:].expand(pad, *x.shape[1:])])
            t = torch.cat([t, t[-1:].expand(pad)])
            extra = {k: torch.cat([v, v[-1:].expand(pad)]) for k, v in extra.items()}
            if self._nhwc:  # the traced strides: a new layout would compile again
                x = x.contiguous(memory_format=torch.channels_last)
        graphs = self.compile_mode in CUDA_GRAPH_MODES
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        start = time.perf_counter()
        try:
            out = compiled(x, t, **extra)
        except Exception as err:
            if not first or self.compile != "auto" or isinstance(err, torch.OutOfMemoryError):
                raise
            self._fall_back(err)
            return net(x[:batch], t[:batch], **{k: v[:batch] for k, v in extra.items()})
        self._batch = traced
        if first:
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            seconds = time.perf_counter() - start
            self.compile_seconds = (self.compile_seconds or 0.0) + seconds
            log.info("compiled %s (%s) in %.1f s", self.name, self.compile_mode, seconds)
        # CUDA graphs reuse their output memory on the next call: keep a copy
        return out[:batch].clone() if graphs else out[:batch]
