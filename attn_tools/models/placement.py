"""Big-model placement: accelerate's device_map, max_memory and disk offload for `load_model`.

A model that does not fit one device is loaded with ``device_map`` (``"auto"`` or an explicit
``{module: device}`` table): accelerate puts whole blocks on the GPUs, then the CPU, then disk,
within ``max_memory`` per device, and moves each block's weights in when the block runs. The
attention modules are still the model's own, so ``output_attentions=True`` returns one
``[B, H, n, n]`` tensor per layer exactly as for a plain load, and forward hooks registered on
the blocks (the interventions adapter) still fire.

Two things differ from a plain load, and this module handles both:

- parameters offloaded to disk sit on the ``meta`` device between forward passes, so reading
  the weights (the model fingerprint) has to fetch them from accelerate's weight map;
- the model is not moved with ``.to(device)``; inputs go to the device of the input embeddings,
  and accelerate carries activations from block to block.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["DEVICE_MAP_STRATEGIES", "Placement", "input_device", "plan_placement", "state_tensors"]

#: the named strategies accelerate accepts for ``device_map``
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
#: ``max_memory`` keys besides GPU indices (accelerate's other device types)
_OTHER_DEVICES = ("cpu", "disk", "mps", "xpu", "npu", "mlu", "musa", "hpu", "sdaa")


def _error(message: str) -> Exception:
    from attn_tools.models import ModelLoadError  # the package imports this module lazily

    return ModelLoadError(message)


def _check_size(key: object, value: object) -> None:
    from accelerate.utils import convert_file_size_to_int

    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _error(
            f"max_memory[{key!r}] is {value!r}; a size is bytes (an int) or a string such as "
            "'20GiB' or '500MB'. Fix: e.g. max_memory={0: '20GiB', 'cpu': '60GiB'}."
        )
    try:
        size = convert_file_size_to_int(value)
    except ValueError:
        size = -1
    if size <= 0:
        raise _error(
            f"max_memory[{key!r}] = {value!r} is not a positive size. Fix: write bytes or a "
            "string such as '20GiB', '500MB'."
        )


@dataclass(frozen=True)
class Placement:
    """How `load_model` places a model: ``kwargs`` for ``from_pretrained`` (empty: plain load)."""

    kwargs: dict[str, Any] = field(default_factory=dict)
    temporary_folder: str | None = None  # an offload folder made here, removed with the model

    def __post_init__(self) -> None:
        # until a model owns the folder, it goes with this plan (a load that fails leaves none)
        if self.temporary_folder is not None:
            cleanup = weakref.finalize(self, shutil.rmtree, self.temporary_folder, True)
            object.__setattr__(self, "_cleanup", cleanup)

    def attach(self, model: Any) -> torch.device:
        """Hand the temporary offload folder's life to ``model``; the device inputs go to."""
        if self.temporary_folder is not None:
            self._cleanup.detach()  # type: ignore[attr-defined]
            weakref.finalize(model, shutil.rmtree, self.temporary_folder, True)
        return input_device(model)


def plan_placement(
    source: str,
    *,
    device: object,
    device_map: str | Mapping[str, Any] | None,
    max_memory: Mapping[int | str, int | str] | None,
    offload_folder: str | Path | None,
) -> Placement:
    """Check the placement arguments of `load_model`; the ``from_pretrained`` keywords they give.

    Empty keywords when ``device_map`` is None (a plain load, moved to ``device`` afterwards).
    Without an ``offload_folder`` a temporary one is made; it is removed when the model is
    garbage collected (`Placement.attach`).

    Raises:
        ModelLoadError: both ``device`` and ``device_map``, ``max_memory`` without
            ``device_map``, an unknown strategy, a GPU index on a machine without one, or a size
            that is not a size. Each message names the value and the fix.
    """
    if device_map is None:
        if max_memory is not None or offload_folder is not None:
            raise _error(
                f"max_memory/offload_folder for {source!r} only apply to a split model. "
                "Fix: add device_map='auto' (or drop them)."
            )
        return Placement()
    if device is not None:
        raise _error(
            f"load_model({source!r}) got both device={device!r} and device_map={device_map!r}; "
            "a split model has no single device. Fix: pass one of them (device_map={'': "
            f"{str(device)!r}}} puts the whole model on that device)."
        )
    if isinstance(device_map, str):
        if device_map not in DEVICE_MAP_STRATEGIES:
            raise _error(
                f"device_map={device_map!r} is not a strategy accelerate knows "
                f"({', '.join(DEVICE_MAP_STRATEGIES)}). Fix: use 'auto', or a dict "
                "{module name: device}."
            )
    elif not isinstance(device_map, Mapping) or not device_map:
        raise _error(
            f"device_map={device_map!r} is neither a strategy nor a non-empty dict. Fix: "
            "device_map='auto', or e.g. {'': 'cpu'} or {'model.layers': 'disk', '': 0}."
        )
    strategy = device_map if isinstance(device_map, str) else dict(device_map)
    kwargs: dict[str, Any] = {"device_map": strategy}
    if max_memory is not None:
        if not isinstance(max_memory, Mapping) or not max_memory:
            raise _error(
                f"max_memory={max_memory!r} is not a dict of device → size. Fix: e.g. "
                "max_memory={0: '20GiB', 'cpu': '60GiB'}."
            )
        gpus = torch.cuda.device_count()
        for key, value in max_memory.items():
            if isinstance(key, int) and not isinstance(key, bool) and not 0 <= key < gpus:
                indices = f"the GPU indices 0..{gpus - 1} and 'cpu'" if gpus else "only 'cpu'"
                raise _error(
                    f"max_memory names GPU {key}, but this machine has {gpus} CUDA device(s). "
                    f"Fix: use {indices}; what does not fit goes to disk (offload_folder)."
                )
            if not isinstance(key, int) and key not in _OTHER_DEVICES:
                raise _error(
                    f"max_memory has the key {key!r}; keys are GPU indices (0, 1, ...) or one of "
                    f"{', '.join(map(repr, _OTHER_DEVICES))}. Fix: e.g. "
                    "max_memory={0: '20GiB', 'cpu': '60GiB'}."
                )
            _check_size(key, value)
        kwargs["max_memory"] = dict(max_memory)
    if offload_folder is not None:
        folder = Path(offload_folder).expanduser()
        if folder.exists() and not folder.is_dir():
            raise _error(
                f"offload_folder {str(folder)!r} is a file. Fix: pass a folder (it is created "
                "if missing)."
            )
        folder.mkdir(parents=True, exist_ok=True)
        return Placement({**kwargs, "offload_folder": str(folder)})
    # accelerate reads offloaded safetensors weights in place; other formats are copied here
    # first, so the folder can grow to the offloaded part of the model
    temporary = tempfile.mkdtemp(prefix="attn_tools_offload_")
    return Placement({**kwargs, "offload_folder": temporary}, temporary)


def input_device(model: Any) -> torch.device:
    """Where input ids must go: the execution device of the input embeddings.

    For a dispatched model that is the device accelerate runs the embedding on (its weights may
    be offloaded to disk, i.e. on ``meta``); otherwise the embedding weight's device.
    """
    try:
        embed = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        embed = None
    for module in (embed, model) if embed is not None else (model,):
        hook = getattr(module, "_hf_hook", None)
        for h in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):
            device = getattr(h, "execution_device", None)
            if device is not None:
                return torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    weight = getattr(embed, "weight", None)
    if weight is not None and not weight.is_meta:
        return weight.device
    return torch.device("cpu")


def _offloaded(model: Any, name: str) -> torch.Tensor:
    """The stored value of a state-dict entry that accelerate offloaded (it is on ``meta``)."""
    owner, _, _ = name.rpartition(".")
    parts = owner.split(".") if owner else []
    # the hook that holds the weights may sit on the owning module or on any ancestor
    for cut in range(len(parts), -1, -1):
        prefix = ".".join(parts[:cut])
        module = model.get_submodule(prefix) if prefix else model
        hook = getattr(module, "_hf_hook", None)
        for h in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):
            weights = getattr(h, "weights_map", None)
            key = name[len(prefix) + 1 :] if prefix else name
            if weights is not None and key in weights:
                return weights[key]
    raise _error(
        f"the weight {name!r} is offloaded but no accelerate hook holds it. Fix: load the model "
        "again (device_map='auto' with an offload_folder)."
    )


def state_tensors(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """``model.state_dict()`` items, with disk-offloaded entries read back one at a time.

    Memory stays at one tensor beyond what is resident, so a model that does not fit can still
    be fingerprinted; the names and order are those of ``state_dict()``, so a split model has
    the same fingerprint as a plain load of the same weights.
    """
    for name, tensor in model.state_dict().items():
        yield name, (_offloaded(model, name) if tensor.is_meta else tensor)
