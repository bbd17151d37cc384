"""``groupcc vision harvest`` and ``groupcc vision train-testbed``: vision models under dihedral groups."""

from __future__ import annotations

import argparse
import importlib
import shutil
from pathlib import Path

import torch
from torch import nn

from groupcc.errors import GroupccError
from groupcc.training.harvest import harvest_to_store
from groupcc.training.image_actions import DihedralImageAction
from groupcc.training.inception import load_inception_v1
from groupcc.training.run_files import resolve_device
from groupcc.training.testbed import TestbedConfig, load_testbed, train_testbed
from groupcc.training.vision_harvest import POSITIONS, iter_vision_harvest, vision_images

MODEL_HELP = ("a testbed run directory (from 'groupcc vision train-testbed'), 'inception' (with --weights), or a Python "
              "import path 'package.module:name' of an nn.Module class or factory (called with no arguments; --weights "
              "loads a state dict into it)")
IMAGES_HELP = "'shapes' (the built-in generator of lines, curves, corners, rings), a .npy array, or a folder of PNG/JPEG files"


def add_vision_commands(commands) -> None:
    vision = commands.add_parser("vision", help="vision models under dihedral groups: harvest a layer, train the testbed CNN")
    sub = vision.add_subparsers(dest="vision_command", required=True, parser_class=type(vision))

    harvest = sub.add_parser("harvest", help="a layer's activations on every rotation/reflection of a set of images")
    harvest.add_argument("--model", required=True, help=MODEL_HELP)
    harvest.add_argument("--weights", help="weights file (.safetensors, .pt, .pth) for 'inception' or an import path")
    harvest.add_argument("--layer", required=True, help="layer name (a submodule, e.g. conv2 or mixed3b)")
    harvest.add_argument("--group", default="D4", help="dihedral group D<n>: rotations by 360°/n and reflections (default D4)")
    harvest.add_argument("--exact", action="store_true", help="fail unless every rotation is a multiple of 90° (no interpolation)")
    harvest.add_argument("--images", default="shapes", help=IMAGES_HELP)
    harvest.add_argument("--n-images", type=int, default=2048, help="images to generate (shapes) or to use at most")
    harvest.add_argument("--size", type=int, default=32, help="side of generated images (shapes)")
    harvest.add_argument("--max-offset", type=float, default=0.0, help="shapes: largest shift off the centre in pixels (0 keeps their symmetries exact)")
    harvest.add_argument("--position", choices=POSITIONS, default="centre", help="where to read the feature map")
    harvest.add_argument("--seed", type=int, default=0)
    harvest.add_argument("--out", required=True, help="new activation store directory")
    harvest.add_argument("--overwrite", action="store_true")
    harvest.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    harvest.add_argument("--quiet", action="store_true")
    harvest.set_defaults(handler=run_vision_harvest)

    testbed = sub.add_parser("train-testbed", help="train the small testbed CNN on generated oriented shapes")
    testbed.add_argument("--out", required=True, help="run directory")
    defaults = TestbedConfig()
    for name in ("size", "n_train", "n_test", "epochs", "batch_size"):
        testbed.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    testbed.add_argument("--lr", type=float, default=defaults.lr)
    testbed.add_argument("--seed", type=int, default=defaults.seed)
    testbed.add_argument("--device", default="auto")
    testbed.add_argument("--overwrite", action="store_true")
    testbed.add_argument("--quiet", action="store_true")
    testbed.set_defaults(handler=run_train_testbed)


def load_vision_model(spec: str, weights: str | None, device: torch.device) -> nn.Module:
    """The model named by ``--model`` (see :data:`MODEL_HELP`), in eval mode on ``device``."""
    if Path(spec).is_dir():
        model, _ = load_testbed(spec)
    elif spec == "inception":
        if not weights:
            raise GroupccError("--model inception needs --weights FILE (InceptionV1 weights in torch-lucent's layout; nothing is downloaded)")
        model = load_inception_v1(weights)
    elif ":" in spec:
        model = _import_model(spec, weights)
    else:
        raise GroupccError(f"--model {spec!r} is neither a testbed run directory, 'inception', nor an import path 'package.module:name'")
    return model.to(device).eval()


def _import_model(spec: str, weights: str | None) -> nn.Module:
    module_name, _, attribute = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise GroupccError(f"cannot import {spec!r}: {err}") from None
    model = factory() if callable(factory) and not isinstance(factory, nn.Module) else factory
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


def run_vision_harvest(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise GroupccError(f"output {str(out)!r} already exists: pass --overwrite to replace it")
    action = DihedralImageAction(args.group, exact=args.exact or None)
    device = resolve_device(args.device)
    model = load_vision_model(args.model, args.weights, device)
    images, metadata = vision_images(args.images, args.n_images, args.size, args.seed, args.max_offset)
    batches = iter_vision_harvest(model, args.layer, images, action, args.position, progress=not args.quiet)
    if out.exists():
        shutil.rmtree(out)
    metadata.update(position=args.position, n_images=len(images), image_shape=list(images.shape[1:]), model=args.model)
    store = harvest_to_store(out, batches, action.order, group=action.group.name, action="dihedral-image",
                             layer=args.layer, source=_source(args.model), metadata=metadata)
    n, blocks, width = store.describe()["shape"]
    print(f"harvested {n} inputs x {blocks} transforms x width {width} from {args.layer!r} of {args.model} "
          f"({action.group.name}, {args.position}) into {out}")


def _source(model: str) -> str:
    return str(Path(model).resolve()) if Path(model).is_dir() else model


def run_train_testbed(args: argparse.Namespace) -> None:
    config = TestbedConfig(size=args.size, n_train=args.n_train, n_test=args.n_test, epochs=args.epochs,
                           batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device)
    run = train_testbed(config, args.out, overwrite=args.overwrite, progress=not args.quiet)
    print(f"trained the testbed CNN into {run}   next: groupcc vision harvest --model {run} --layer conv2 --group D4 --out ACTS")
