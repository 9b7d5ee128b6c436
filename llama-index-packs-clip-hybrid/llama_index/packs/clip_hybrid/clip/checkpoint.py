"""Load a CLIP checkpoint into our model (model.py) in one copy of the weights, by tower.

OpenAI's ``clip.load`` reads the TorchScript archive from a file object (torch then
buffers all of it), keeps the module while it builds a randomly initialised fp32 model
(605 MB for ViT-B/32), converts that to fp16, copies the weights in and converts again to
fp32: for ViT-B/32 its peak is +1.16 GB over the imports. Here the archive is read from
its path, the model is built on the ``meta`` device (no memory, no random init), and each
stored tensor is converted and handed to it in turn, freeing the stored one.

The two towers load separately (:func:`load_towers`): ingesting images needs only the
image tower (350 MB in fp32), a text search only the text tower (252 MB). The towers not
loaded (yet) stay on ``meta``.

Also accepted: a ``torch.save(state_dict)`` file, which ``clip.load`` reads from an
un-rewound file handle and fails on.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from .preprocess import ClipPreprocess

if TYPE_CHECKING:
    from .model import ClipModel

Tower = Literal["visual", "text"]
TOWERS: tuple[Tower, ...] = ("visual", "text")
#: Entries of OpenAI's archives that are settings, not weights (build_model drops them).
_SETTINGS = ("input_resolution", "context_length", "vocab_size")


def load_clip(
    path: str, *, device: str, towers: Sequence[Tower] = TOWERS
) -> tuple[ClipModel, Callable[..., Any]]:
    """The CLIP model with ``towers`` in fp32 on ``device``, and its image transform.

    Raises what reading raises (OSError, RuntimeError, EOFError, KeyError, ...).
    """
    from .model import ClipShapes, build_clip  # torch: imported when a model is loaded

    state = read_state_dict(path)
    shapes = ClipShapes.from_state_dict(state)
    with _shapes_only_mode():
        model = build_clip(shapes)
    load_towers(model, state, towers, device=device, name=path)
    return model.eval(), ClipPreprocess(shapes.image_resolution)


#: Initialisers that ``clip.model`` (and the torch layers it builds) run on new weights.
_INITIALISERS = frozenset(
    {
        "normal_",
        "uniform_",
        "fill_",
        "zero_",
        "zeros_",
        "ones_",
        "constant_",
        "kaiming_uniform_",
        "kaiming_normal_",
        "xavier_uniform_",
        "xavier_normal_",
        "trunc_normal_",
        "triu_",
    }
)
_SCALAR_ARITHMETIC = frozenset({"__mul__", "__rmul__", "__truediv__", "mul", "div"})


def _shapes_only_mode() -> Any:
    """A torch function mode that builds modules on the ``meta`` device, cheaply.

    Like ``with torch.device("meta")``, every new tensor is a meta tensor (shapes, no
    memory). Torch computes most operations on meta tensors with its Python reference
    implementations, and their first call imports ``torch._dynamo`` (+150 MB and ~10 s
    here: ``python -c "import torch; import torch._dynamo"``). Building CLIP runs an
    initialiser or a scalar product on almost every weight; meta tensors have no values
    to compute, so this mode skips those (a random or constant tensor is made empty, an
    initialiser returns its tensor, a product with a number a new meta tensor of the same
    shape). Anything else runs as torch runs it: still right, only slower the first time.
    """
    import numbers

    import torch
    from torch.overrides import TorchFunctionMode

    try:
        from torch.utils._device import _device_constructors  # private: may move
    except ImportError:  # pragma: no cover - another torch: the plain meta device
        return torch.device("meta")

    factories = _device_constructors()
    valueless = {torch.randn, torch.rand, torch.ones, torch.zeros, torch.empty}

    class ShapesOnly(TorchFunctionMode):
        def __torch_function__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            kwargs = dict(kwargs or {})
            if func in factories and kwargs.get("device") is None:
                if func in valueless:  # torch.randn's meta version is Python too
                    return torch.empty(*args, dtype=kwargs.get("dtype"), device="meta")
                kwargs["device"] = "meta"
                return func(*args, **kwargs)
            first = args[0] if args else kwargs.get("tensor", kwargs.get("input"))
            if isinstance(first, torch.Tensor) and first.is_meta:
                name = getattr(func, "__name__", "")
                if name in _INITIALISERS:
                    return first
                if (
                    name in _SCALAR_ARITHMETIC
                    and len(args) == 2
                    and isinstance(args[1], numbers.Number)
                ):
                    return torch.empty(first.shape, dtype=first.dtype, device="meta")
            return func(*args, **kwargs)

    return ShapesOnly()


def load_towers(
    model: Any, state: dict[str, Any], towers: Sequence[Tower], *, device: str, name: str
) -> None:
    """Give ``model`` the weights of ``towers`` from ``state``, as fp32 on ``device``.

    ``state`` is emptied as it goes: each stored tensor is freed once converted (or at
    once, when its tower is not wanted).
    """
    import torch

    for key in list(state):  # first free what is not wanted, then convert the rest
        if key in _SETTINGS or (tower_of(key) not in towers and key != "logit_scale"):
            del state[key]
    taken = {}
    for key in list(state):
        tensor = state.pop(key)
        if tensor.is_floating_point():
            taken[key] = tensor.to(device=device, dtype=torch.float32)
        else:
            taken[key] = tensor.to(device)
    unexpected = model.load_state_dict(taken, assign=True, strict=False).unexpected_keys
    del taken
    if unexpected:
        raise RuntimeError(f"checkpoint {name!r} has unexpected weights {unexpected[:3]}")
    if "text" in towers:
        # The causal mask is a plain attribute, not state: it was made on meta.
        with torch.device(device):
            model.set_attention_mask()
    stranded = [key for key, tensor in model.state_dict().items() if tensor.is_meta]
    stranded = [key for key in stranded if tower_of(key) in towers]
    if stranded:
        raise RuntimeError(f"checkpoint {name!r} has no values for {', '.join(stranded[:3])}")


def tower_of(key: str) -> Tower:
    """The tower a state-dict key belongs to (``logit_scale`` counts as text)."""
    return "visual" if key.startswith("visual.") else "text"


def read_state_dict(path: str) -> dict[str, Any]:
    """The checkpoint's tensors as stored (fp16 for OpenAI's), from a TorchScript archive
    or a ``torch.save`` state dict."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load deprecation
            # A path, not a file object: from a file object (as clip.load passes it),
            # torch.jit.load buffers the whole archive, +1.2 GB at peak for ViT-B/32.
            module = torch.jit.load(path, map_location="cpu")
    except RuntimeError:  # not TorchScript: a plain state dict, mapped rather than read
        try:
            state = torch.load(
                path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path)
            )
        except Exception as exc:  # whatever the bytes are, one sentence about them
            state = exc
        if not isinstance(state, dict) or "text_projection" not in state:
            why = f" ({type(state).__name__}: {state})" if isinstance(state, Exception) else ""
            raise RuntimeError(
                f"{path} is neither a TorchScript CLIP archive nor a CLIP state dict{why}"
            ) from None
        return dict(state)
    state = dict(module.state_dict())
    del module  # its tensors live on in ``state`` only, to be freed one by one
    return state
