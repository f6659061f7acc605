"""Official UniSeg3D checkpoints: code-free reading and the key map onto the `official` modules.

`read_official_checkpoint` loads an mmengine checkpoint (a dict with `state_dict`, and
`meta`, `message_hub`, `optimizer`, ... beside it) through torch's `weights_only` unpickler,
which builds tensors and plain containers and never calls anything else. mmengine's own
classes in the metadata (e.g. `HistoryBuffer` in `message_hub`) are admitted as inert records
that run no code, and NumPy arrays through NumPy's reconstruction functions; any other global
the file names (a function such as `os.system`, a class of some package) is refused, listed,
before anything is unpickled.

`official_key` renames a state-dict key of the released model to ours: the backbone's blocks
(`unet.*`, `input_conv`, `output_layer`) live in the shared `SparseUNet` under other names;
`decoder.*`, `lang.*`, `type_embedding`, `pred_iou_proj` keep theirs. `convert_state_dict`
maps every key, brings the sparse convolution weights from the file's spconv layout to ours
(`conv_layout`: found from the shapes, or named), checks the result against the model's own
state dict (missing, unexpected and mis-shaped keys are one error listing them all) and returns
the training-only entries (the contrastive criterion's learnable scale) separately.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from uniseg3d.config import ModelConfig
from uniseg3d.datasets.official_info import is_numpy_data, numpy_global
from uniseg3d.model.official.conv_layout import ConvLayoutError, to_native
from uniseg3d.model.official.language import OfficialTextEncoder
from uniseg3d.model.official.network import OfficialUniSeg3D
from uniseg3d.model.text_encoder import CachedTextEncoder

log = logging.getLogger(__name__)

CRITERION_PREFIX = "criterion."
PROTOTYPES_KEY = "class_prototypes"


class OfficialCheckpointError(ValueError):
    """An official checkpoint that cannot be read safely or does not fit the official model."""


class InertRecord:
    """Stands in for an mmengine class in a checkpoint's metadata: takes any arguments and
    state, keeps them, runs nothing."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state


def _admissible(name: str) -> bool:
    return name.startswith("mmengine.") or is_numpy_data(name)


def read_official_checkpoint(path: str | Path) -> dict:
    """The whole checkpoint dict, read without running pickled code; refuses a file that names
    any global other than mmengine's classes and NumPy's array reconstruction."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as error:  # not a torch zip file, or a damaged one
        raise OfficialCheckpointError(f"{path}: not a readable torch checkpoint ({error})") \
            from None
    refused = sorted(name for name in needed if not _admissible(name))
    if refused:
        raise OfficialCheckpointError(
            f"{path} refused: it pickles globals that could run code when loaded: "
            f"{', '.join(refused)} (only tensors, plain containers, NumPy arrays and mmengine "
            "records are read)")
    admitted = [(InertRecord, name) if name.startswith("mmengine.") else
                (numpy_global(name), name) for name in needed]
    if "numpy.dtype" in needed:  # a dtype is rebuilt as an instance of its class, e.g.
        admitted += [kind for kind in vars(np.dtypes).values()  # Float64DType
                     if isinstance(kind, type) and issubclass(kind, np.dtype)]
    with torch.serialization.safe_globals(admitted):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise OfficialCheckpointError(f"{path}: cannot be read safely: {error}") from None


def official_state_dict(checkpoint: dict, path: str | Path) -> dict[str, torch.Tensor]:
    """The `state_dict` of an mmengine checkpoint (or the dict itself if it is one), without a
    DDP `module.` prefix."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in
                                              state.values()):
        raise OfficialCheckpointError(f"{path}: holds no state_dict of tensors")
    return {key.removeprefix("module."): value for key, value in state.items()}


_UNET_TOKENS = {"u": "inner", "conv": "down", "deconv": "up", "conv_branch": "body",
                "i_branch": "shortcut"}


def _unet_path(tokens: list[str]) -> list[str]:
    """The official SpConvUNet's module path -> the shared SparseUNet's (`backbone.unet`)."""
    out, i = [], 0
    while i < len(tokens):
        token = tokens[i]
        if token in ("blocks", "blocks_tail") and i + 1 < len(tokens) and \
                tokens[i + 1].startswith("block"):
            out += ["encoder" if token == "blocks" else "decoder",
                    tokens[i + 1].removeprefix("block")]
            i += 2
            continue
        out.append(_UNET_TOKENS.get(token, token))
        i += 1
    return out


def official_key(key: str) -> str:
    """Our key for an official state-dict key."""
    head, _, rest = key.partition(".")
    if head == "unet":
        return "backbone.unet." + ".".join(_unet_path(rest.split(".")))
    if head == "input_conv":
        return "backbone.stem." + rest
    if head == "output_layer":
        return "backbone.head." + rest
    return key


_UNET_NAMES = {ours: theirs for theirs, ours in _UNET_TOKENS.items()}


def released_key(key: str) -> str:
    """The released model's key for one of ours (the inverse of `official_key`)."""
    if key.startswith("backbone.stem."):
        return "input_conv." + key.removeprefix("backbone.stem.")
    if key.startswith("backbone.head."):
        return "output_layer." + key.removeprefix("backbone.head.")
    if not key.startswith("backbone.unet."):
        return key
    tokens, out = key.removeprefix("backbone.unet.").split("."), []
    i = 0
    while i < len(tokens):
        if tokens[i] in ("encoder", "decoder") and i + 1 < len(tokens) and tokens[i + 1].isdigit():
            out += ["blocks" if tokens[i] == "encoder" else "blocks_tail", f"block{tokens[i + 1]}"]
            i += 2
            continue
        out.append(_UNET_NAMES.get(tokens[i], tokens[i]))
        i += 1
    return "unet." + ".".join(out)


def class_prototypes(path: str | Path, classes: int, embed_dim: int) -> torch.Tensor:
    """(classes, P, embed_dim) float32 from `scannet_cls_embedding.pth`: a tensor of that shape
    (or (classes, embed_dim)), or a dict holding exactly one such tensor."""
    value = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(value, dict):
        tensors = [v for v in value.values() if isinstance(v, torch.Tensor)]
        value = tensors[0] if len(tensors) == 1 else None
    if not isinstance(value, torch.Tensor) or value.dim() not in (2, 3) or \
            value.shape[0] != classes or value.shape[-1] != embed_dim:
        found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise OfficialCheckpointError(
            f"{path}: expected class embeddings of shape ({classes}, prototypes, {embed_dim}), "
            f"found {found}")
    return (value if value.dim() == 3 else value[:, None]).float()


def native_layout(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                  layout: str | None = None, label=str) -> dict[str, torch.Tensor]:
    """`state` (our keys) with its convolution weights in our spconv layout (`conv_layout`:
    the file's found from the shapes, or `layout` when named); the layout found is logged;
    `label(key)` names a key in messages."""
    try:
        state, finding = to_native(state, expected, layout, label)
    except ConvLayoutError as error:
        raise OfficialCheckpointError(str(error)) from None
    if finding is not None:
        log.info("%s", finding.describe())
    return state


def convert_state_dict(official: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                       layout: str | None = None
                       ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(model state, criterion state): every official key mapped onto `expected` (the official
    model's state dict, minus the class prototypes), convolution weights in our layout
    (`layout`: the file's spconv layout, when it cannot be found from the shapes), strictly."""
    model, criterion = {}, {}
    for key, value in official.items():
        if key.startswith(CRITERION_PREFIX):
            criterion[key.removeprefix(CRITERION_PREFIX)] = value
        else:
            model[official_key(key)] = value
    wanted = {k: v for k, v in expected.items() if k != PROTOTYPES_KEY}
    inverse = {official_key(k): k for k in official}
    model = native_layout(model, wanted, layout, inverse.get)
    problems = [f"missing: {k}" for k in sorted(set(wanted) - set(model))]
    problems += [f"unexpected: {inverse[k]}" for k in sorted(set(model) - set(wanted))]
    problems += [f"shape of {inverse[k]}: {tuple(model[k].shape)}, expected "
                 f"{tuple(wanted[k].shape)}" for k in sorted(set(model) & set(wanted))
                 if model[k].shape != wanted[k].shape]
    if problems:
        raise OfficialCheckpointError(
            f"the checkpoint does not fit the official model ({len(problems)} problems):\n  "
            + "\n  ".join(problems))
    return model, criterion


def load_official_model(state: dict, device: str = "cpu"
                        ) -> tuple[OfficialUniSeg3D, CachedTextEncoder, torch.Tensor]:
    """(model in eval mode, its text encoder, the (20, P, D) class prototypes) from a uniseg3d
    checkpoint of the official recipe (`uniseg3d import-official` writes them)."""
    config = ModelConfig.from_dict(json.loads(state["model_config"]))
    prototypes = state["model"][PROTOTYPES_KEY]
    model = OfficialUniSeg3D(config, state["text_model"], prototypes.shape[1],
                             device)
    model.load_state_dict(state["model"])
    model = model.to(device).eval()
    encoder = CachedTextEncoder(OfficialTextEncoder(model.lang.text_encoder, state["text_model"]),
                                token_dtype=torch.float32)
    return model, encoder, model.class_prototypes
