"""``groupcc vision harvest`` and ``groupcc vision train-testbed``: vision models under dihedral groups."""

from __future__ import annotations

import argparse

from groupcc.training.devices import resolve_device
from groupcc.training.testbed import TestbedConfig, train_testbed
from groupcc.training.vision_harvest import POSITIONS, harvest_images, vision_images
from groupcc.training.vision_models import MODEL_HELP, load_vision_model, model_source, weights_source

from .options import add_options, option_values

IMAGES_HELP = ("'shapes' (the built-in generator of lines, curves, corners, rings), 'photos' (seeded random square crops of "
               "the photographs inside scikit-image, scikit-learn and matplotlib), a .npy array, or a folder of PNG/JPEG files")
TESTBED_OPTIONS = ["size", "n_train", "n_test", "epochs", "batch_size", "lr", "seed", "device"]


def add_vision_commands(commands) -> None:
    vision = commands.add_parser("vision", help="vision models under dihedral groups: harvest a layer, train the testbed CNN")
    sub = vision.add_subparsers(dest="vision_command", required=True, parser_class=type(vision))

    harvest = sub.add_parser("harvest", help="a layer's activations on every rotation/reflection of a set of images")
    harvest.add_argument("--model", required=True, help=MODEL_HELP)
    harvest.add_argument("--weights", help="weights file (.safetensors, .pt, .pth) for 'inception', 'mobilenet_v2' or an import path")
    harvest.add_argument("--layer", required=True, help="layer name (a submodule, e.g. conv2, mixed3b or features.7.conv.0)")
    add_options(harvest, harvest_images, ["group", "position", "batch_size"], choices={"position": POSITIONS}, helps={
        "group": "dihedral group D<n>: rotations by 360°/n and reflections", "position": "where to read the feature map",
        "batch_size": "images × transforms per forward pass; bounds the memory (default: 32 on a CPU, 1024 on a GPU)"})
    harvest.add_argument("--exact", action="store_true", help="fail unless every rotation is a multiple of 90° (no interpolation)")
    harvest.add_argument("--images", default="shapes", help=IMAGES_HELP)
    add_options(harvest, vision_images, ["n_images", "size", "max_offset", "seed"], defaults={"n_images": 2048}, helps={
        "n_images": "images to generate (shapes, photos) or to use at most", "size": "side of generated images (shapes, photos)",
        "max_offset": "shapes: largest shift off the centre in pixels (0 keeps their symmetries exact)",
        "seed": "seed of the generated shapes or photo crops"})
    harvest.add_argument("--out", required=True, help="new activation store directory")
    harvest.add_argument("--overwrite", action="store_true", help="replace an existing store at --out (once the new one is complete)")
    harvest.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    harvest.add_argument("--quiet", action="store_true", help="no progress bar")
    harvest.set_defaults(handler=run_vision_harvest)

    testbed = sub.add_parser("train-testbed", help="train the small testbed CNN on generated oriented shapes")
    testbed.add_argument("--out", required=True, help="run directory")
    add_options(testbed, TestbedConfig, TESTBED_OPTIONS)
    testbed.add_argument("--overwrite", action="store_true", help="replace an existing run in --out (once the new one is complete)")
    testbed.add_argument("--quiet", action="store_true", help="no progress bar")
    testbed.set_defaults(handler=run_train_testbed)


def run_vision_harvest(args: argparse.Namespace) -> None:
    model = load_vision_model(args.model, args.weights, resolve_device(args.device))
    images, metadata = vision_images(args.images, args.n_images, args.size, args.seed, args.max_offset)
    metadata = {**metadata, "model": args.model, "weights": weights_source(args.model, args.weights)}
    store = harvest_images(model, args.layer, images, args.group, position=args.position, exact=args.exact, batch_size=args.batch_size,
                           out=args.out, overwrite=args.overwrite, metadata=metadata, source=model_source(args.model),
                           progress=not args.quiet)
    n, blocks, width = store.shape
    print(f"harvested {n} inputs x {blocks} transforms x width {width} from {args.layer!r} of {args.model} "
          f"({args.group}, {args.position}) into {args.out}")


def run_train_testbed(args: argparse.Namespace) -> None:
    run = train_testbed(TestbedConfig(**option_values(args, TESTBED_OPTIONS)), args.out, overwrite=args.overwrite, progress=not args.quiet)
    print(f"trained the testbed CNN into {run}   next: groupcc vision harvest --model {run} --layer conv2 --group D4 --out ACTS")
