"""LoRA fine-tuning of BEATs and EAT through the ``peft`` library (Hu et al., ICLR 2022).

A LoRA layer keeps a frozen Linear ``W`` and learns ``ΔW = (alpha / rank) · B · A`` beside it
(``A``: rank × in, ``B``: out × rank, ``B`` starting at zero, so the model starts as the base).
:func:`add_lora` puts such layers on the attention's query/key/value projections
(:data:`TARGETS`: BEATs' ``q_proj``/``k_proj``/``v_proj``, EAT's fused ``qkv``) in place with
``peft.inject_adapter_in_model``: the backbone keeps its class and methods (``features``,
``forward_features``, ``embed_dim``), only the targeted Linears change. The base is frozen, the
adapters train. The public recipe (kasahart/asd-experiments ``asd03``, after ASDKit's
``BEATsLoRA``): rank 64 on q/k/v of BEATs_iter3, peft's default alpha (8) and no dropout.

A LoRA run saves what trains (:func:`trainable_state_dict`: adapters and any trainable head)
and names its frozen base by :func:`frozen_checksum`; :func:`merged` gives a plain copy of the
backbone with the adapters folded into the weights, for embedding.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping, Sequence

import torch
from torch import nn

TARGETS = {"beats": ("q_proj", "k_proj", "v_proj"), "eat": ("qkv",)}
ADAPTER = "lora_"  # what peft's adapter parameters' names contain


def _peft():
    import peft  # imported when used: it pulls transformers in (~3 s)

    return peft


def add_lora(
    backbone: nn.Module,
    rank: int = 64,
    alpha: float = 8.0,
    dropout: float = 0.0,
    target_modules: Sequence[str] | None = None,
) -> nn.Module:
    """``backbone`` with LoRA layers on ``target_modules`` (default: its kind's :data:`TARGETS`),
    changed in place and returned: every base parameter frozen, the adapters trainable."""
    if target_modules is None:
        kind = type(backbone).__name__.lower()
        if kind not in TARGETS:
            raise ValueError(f"no default LoRA targets for {type(backbone).__name__}; name them")
        target_modules = TARGETS[kind]
    names = {name.rsplit(".", 1)[-1] for name, _ in backbone.named_modules()}
    missing = sorted(set(target_modules) - names)
    if missing:
        raise ValueError(f"{type(backbone).__name__} has no module named {missing}")
    peft = _peft()
    config = peft.LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules)
    )
    backbone.requires_grad_(False)
    model = peft.inject_adapter_in_model(config, backbone)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(ADAPTER in name)
    return model


def has_adapters(model: nn.Module) -> bool:
    """Whether ``model`` carries LoRA adapters (a parameter named as peft names them)."""
    return any(ADAPTER in name for name, _ in model.named_parameters())


def adapter_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The LoRA layers of ``model`` by qualified name (peft's tuner layers)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {n: m for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)}


def merged(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every LoRA layer folded into its Linear (``W + ΔW``) and
    replaced by that Linear: the base architecture, its state-dict keys, no peft left."""
    out = copy.deepcopy(model)
    for name, layer in adapter_layers(out).items():
        layer.merge()
        parent, _, child = name.rpartition(".")
        setattr(out.get_submodule(parent), child, layer.get_base_layer())
    return out


def _partition(model: nn.Module) -> tuple[dict, dict]:
    """``(trainable, frozen)`` tensors of ``model`` by state-dict name: parameters by
    ``requires_grad``; a buffer goes with the trainable side when its module owns a trainable
    parameter (BatchNorm's running statistics beside its affine weights), else with the base."""
    trainable, frozen = {}, {}
    for prefix, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False))
        learns = any(p.requires_grad for p in own.values())
        for name, tensor in [*own.items(), *module.named_buffers(recurse=False)]:
            if tensor is None:
                continue
            side = tensor.requires_grad if name in own else learns
            (trainable if side else frozen).setdefault(f"{prefix}.{name}".lstrip("."), tensor)
    return trainable, frozen


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a LoRA run saves (detached): the trainable parameters (adapters, heads) and the
    buffers beside them (:func:`_partition`); the frozen base is rebuilt from its official
    weights and named by :func:`frozen_checksum`."""
    return {name: tensor.detach() for name, tensor in _partition(model)[0].items()}


def load_trainable_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Copy ``state`` (:func:`trainable_state_dict`) into ``model``, in place; the names must be
    exactly those :func:`trainable_state_dict` gives (no more, no fewer)."""
    tensors = _partition(model)[0]
    extra, missing = sorted(set(state) - set(tensors)), sorted(set(tensors) - set(state))
    if extra or missing:
        raise KeyError(f"trainable weights do not match: missing {missing[:3]}, extra {extra[:3]}")
    with torch.no_grad():
        for name, value in state.items():
            tensors[name].copy_(value)
    return model


def frozen_checksum(model: nn.Module) -> str:
    """sha256 over the frozen side of :func:`_partition` (name, dtype, shape, bytes), in name
    order: the identity of a LoRA run's base (same weights → same checksum, whatever file or
    format they were loaded from); training never changes it."""
    digest = hashlib.sha256()
    for name, tensor in sorted(_partition(model)[1].items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """``{"trainable": …, "frozen": …}`` parameter counts (shared tensors counted once)."""
    counts = {"trainable": 0, "frozen": 0}
    for parameter in model.parameters():
        counts["trainable" if parameter.requires_grad else "frozen"] += parameter.numel()
    return counts
