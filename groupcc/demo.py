"""``groupcc demo``: the whole chain on a small built-in default.

composer train → composer eval → harvest → dict train (crosscoder, SAE) → dict eval → analyze → report.
Each step calls the library and is printed as the ``groupcc`` command line that does the same, so the demo
doubles as a recipe for other groups.

Everything is checked before anything is written (:func:`plan_demo`): the demo's settings, the configs of every
step (composer, dictionaries, analysis), the memory and disk the largest step needs, and the output directory.
The demo holds its directory's lock throughout, and a demo that fails removes what it wrote.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from groupcc.crosscoders import DictionaryConfig
from groupcc.errors import GroupccError
from groupcc.eval.analysis import AnalysisSettings, analysis_bytes
from groupcc.eval.composer_evaluation import evaluate_composer
from groupcc.eval.dictionary_metrics import evaluate_dictionary_run
from groupcc.eval.pipeline import analyze_runs
from groupcc.eval.report import write_report
from groupcc.groups import PAIR_ACTIONS, Group, get_group
from groupcc.groups.limits import array_bytes, bytes_text, memory_refusal
from groupcc.training.composer_training import MAX_EPOCHS, ComposerTrainingConfig, default_config, fit_composer
from groupcc.training.devices import resolve_device
from groupcc.training.dictionary_trainer import TrainerConfig, train_dictionary
from groupcc.training.harvest import harvest
from groupcc.training.runs import check_number, check_output, lock, read_json

from .analyze_cmd import comparison_lines
from .options import add_options

#: Small enough for a laptop CPU: S4 (24 elements) groks in seconds with most pairs in the training set.
DEMO_COMPOSER = {"mlp": {"epochs": 8000, "train_frac": 0.8, "lr": 3e-3}, "transformer": {"epochs": 20000, "train_frac": 0.8, "lr": 3e-3}}
DEMO_LAYER = {"mlp": "hidden", "transformer": "hidden"}
#: The architecture field that is the width of the demo's layer.
DEMO_WIDTH = {"mlp": "d_hidden", "transformer": "d_mlp"}
#: ReLU + L1 dictionaries: their features follow the composer's irreps (top-k ones tend to memorise single pairs).
DEMO_DICTIONARY = {"sparsity": "l1", "l1": 2.0, "steps": 3000, "batch_size": 256, "lr": 1e-3}
#: The most dictionary steps a demo takes (any more is a typo).
MAX_STEPS = 10**9
#: What a demo directory holds: ``--overwrite`` replaces only a directory with nothing else in it.
DEMO_RUNS = ("composer", "acts", "crosscoder", "sae", "analysis")


def demo_features(group_order: int) -> int:
    """``|G|²/9`` features, clipped to 16..128: with as many features as a few per pair a dictionary memorises
    pairs (features that fire on one pair mix every irrep); measured on S4 and D6."""
    return int(min(128, max(16, group_order**2 // 9)))


@dataclass(frozen=True)
class DemoSettings:
    """What the demo runs.

    Attributes:
        group: group of the composer
        arch: composer architecture
        action: group action on the pairs (left, right, conjugation)
        epochs: composer epochs (default: 8000 for the MLP, 20000 for the Transformer)
        features: dictionary features (default: |G|²/9, clipped to 16..128)
        steps: dictionary training steps
        seed: seed of every step
        device: auto (CUDA when present), cpu, cuda
    """

    group: str = "S4"
    arch: str = "mlp"
    action: str = "left"
    epochs: int | None = None
    features: int | None = None
    steps: int = DEMO_DICTIONARY["steps"]
    seed: int = 1
    device: str = "auto"

    def __post_init__(self):
        if self.arch not in DEMO_COMPOSER:
            raise GroupccError(f"arch {self.arch!r}: expected one of {', '.join(DEMO_COMPOSER)}")
        if self.action not in PAIR_ACTIONS:
            raise GroupccError(f"action {self.action!r}: expected one of {', '.join(PAIR_ACTIONS)}")
        if self.epochs is not None:
            check_number("epochs", self.epochs, 1, MAX_EPOCHS, integer=True)
        if self.features is not None:
            check_number("features", self.features, 1, integer=True)
        check_number("steps", self.steps, 1, MAX_STEPS, integer=True)
        check_number("seed", self.seed, 0, integer=True)
        if not isinstance(self.device, str):
            raise GroupccError(f"device {self.device!r}: expected auto, cpu, cuda or cuda:N")
        resolve_device(self.device)

    @property
    def composer_settings(self) -> dict:
        return {**DEMO_COMPOSER[self.arch], **({} if self.epochs is None else {"epochs": self.epochs})}


@dataclass(frozen=True)
class DemoPlan:
    """The checked configs of every step of a demo."""

    settings: DemoSettings
    group: Group
    composer: ComposerTrainingConfig
    width: int
    dictionary: dict
    analysis: AnalysisSettings

    @property
    def n_features(self) -> int:
        return self.dictionary["n_features"]


def plan_demo(settings: DemoSettings) -> DemoPlan:
    """Every step's config, made (and so checked) before anything is written, and the memory and disk the
    demo needs (:func:`demo_bytes`) against the machine's."""
    group = get_group(settings.group)
    if group.order < 2:
        raise GroupccError(f"group {settings.group} has one element: expected a group of order at least 2 (a composer of the "
                           "trivial group has nothing to learn)")
    composer = default_config(settings.group, settings.arch, seed=settings.seed, device=settings.device, **settings.composer_settings)
    width = getattr(composer.architecture, DEMO_WIDTH[settings.arch])
    dictionary = {
        "n_features": settings.features or demo_features(group.order), "sparsity": DEMO_DICTIONARY["sparsity"],
        "l1_coefficient": DEMO_DICTIONARY["l1"], "steps": settings.steps, "batch_size": min(DEMO_DICTIONARY["batch_size"], group.order**2),
        "lr": DEMO_DICTIONARY["lr"], "seed": settings.seed, "device": settings.device,
    }
    TrainerConfig(**{name: dictionary[name] for name in ("steps", "batch_size", "lr", "seed", "device")})
    for kind, blocks in (("crosscoder", group.order), ("sae", 1)):
        DictionaryConfig(kind=kind, d=width, n_features=dictionary["n_features"], n_blocks=blocks, group=group.name,
                         sparsity=dictionary["sparsity"], l1_coefficient=dictionary["l1_coefficient"])
    plan = DemoPlan(settings, group, composer, width, dictionary, AnalysisSettings(seed=settings.seed))
    memory, _ = demo_bytes(plan)
    refusal = memory_refusal(f"the demo on {group.name} with {plan.n_features} features", memory)
    if refusal:
        raise GroupccError(f"{refusal}: expected fewer features or a smaller group")
    return plan


def demo_bytes(plan: DemoPlan) -> tuple[int, int]:
    """``(memory, disk)`` estimates: the memory of the largest step (the composer's full-batch float64 logits
    ``[|G|², |G|]`` with gradients; a dictionary's weights, gradients and Adam moments ``4 × (F·|G|·d + d·F)``
    float32; the analysis of both dictionaries, :func:`groupcc.eval.analysis.analysis_bytes`), and the activation
    store on disk, ``[|G|², |G|, d]`` float32."""
    order, width, n_features = plan.group.order, plan.width, plan.n_features
    composer = plan.composer.training_bytes
    dictionary = array_bytes((4, n_features, order, width)) + array_bytes((4, width, n_features))
    analysis = sum(analysis_bytes(plan.group, order**2, n_features, width, kind, plan.analysis) for kind in ("crosscoder", "sae"))
    return max(composer, dictionary, analysis), array_bytes((order**2, order, width))


def check_demo_output(out: Path, overwrite: bool, store_bytes: int) -> None:
    """``out`` must be writable with room for the activation store, and new or empty, or (``overwrite``) an
    earlier demo: a directory holding nothing but the demo's runs."""
    check_output(out, "demo directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise GroupccError(f"demo directory {str(out)!r} already exists: overwrite it, or choose another path")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in DEMO_RUNS and not p.name.startswith("."))
        if foreign:
            raise GroupccError(f"{str(out)!r} holds {', '.join(foreign[:3])}, which are not a demo's: expected a new path, "
                               f"or an earlier demo (only {', '.join(DEMO_RUNS)}) to replace")
    existing = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if store_bytes > free:
        raise GroupccError(f"the demo's activation store needs about {bytes_text(store_bytes)} of disk, more than the "
                           f"{bytes_text(free)} free under {str(existing)!r}: expected a smaller group")


def add_demo_command(commands) -> None:
    demo = commands.add_parser("demo", help="the whole chain on a small default: composer, crosscoder and SAE, analysis, report")
    demo.add_argument("--out", default="runs/demo", help="directory for every run of the demo (default runs/demo)")
    add_options(demo, DemoSettings, ["group", "arch", "action", "epochs", "features", "steps", "seed", "device"],
                choices={"arch": list(DEMO_COMPOSER), "action": PAIR_ACTIONS})
    demo.add_argument("--overwrite", action="store_true", help="replace an existing demo directory")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> None:
    settings = DemoSettings(group=args.group, arch=args.arch, action=args.action, epochs=args.epochs, features=args.features,
                            steps=args.steps, seed=args.seed, device=args.device)
    plan = plan_demo(settings)
    out = Path(args.out)
    check_demo_output(out, args.overwrite, demo_bytes(plan)[1])
    started = time.perf_counter()
    # Built in place, not beside: its runs record each other's paths (the store its composer, a dictionary its store).
    with lock(out):
        existed = out.exists()
        for name in DEMO_RUNS:
            shutil.rmtree(out / name, ignore_errors=True)
        try:
            for command, step in zip(demo_commands(plan, out, args.quiet), demo_steps(plan, out, not args.quiet)):
                print(f"\n$ groupcc {shlex.join(command)}", flush=True)
                print(step())
        except BaseException:  # the demo cannot be resumed: leave nothing half-made
            for name in DEMO_RUNS:
                shutil.rmtree(out / name, ignore_errors=True)
            if not existed:
                shutil.rmtree(out, ignore_errors=True)
            raise
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s. Open the report: {out / 'analysis' / 'report.html'}")


def demo_commands(plan: DemoPlan, out: Path, quiet: bool) -> list[list[str]]:
    """The ``groupcc`` command lines of the demo, in order."""
    settings, composer_settings = plan.settings, plan.settings.composer_settings
    composer, acts, report = out / "composer", out / "acts", out / "analysis"
    quiet_flag = ["--quiet"] if quiet else []
    dictionary = [
        "--features", str(plan.n_features), "--sparsity", DEMO_DICTIONARY["sparsity"], "--l1", str(DEMO_DICTIONARY["l1"]),
        "--steps", str(settings.steps), "--batch-size", str(plan.dictionary["batch_size"]), "--lr", str(DEMO_DICTIONARY["lr"]),
        "--seed", str(settings.seed), "--device", settings.device, *quiet_flag,
    ]
    return [
        ["composer", "train", "--group", settings.group, "--arch", settings.arch, "--seed", str(settings.seed), "--out", str(composer),
         "--epochs", str(composer_settings["epochs"]), "--train-frac", str(composer_settings["train_frac"]), "--lr", str(composer_settings["lr"]),
         "--device", settings.device, *quiet_flag],
        ["composer", "eval", str(composer), *quiet_flag],
        ["harvest", "--run", str(composer), "--layer", DEMO_LAYER[settings.arch], "--action", settings.action, "--out", str(acts),
         "--device", settings.device, *quiet_flag],
        ["dict", "train", "--acts", str(acts), "--kind", "crosscoder", "--out", str(out / "crosscoder"), *dictionary],
        ["dict", "train", "--acts", str(acts), "--kind", "sae", "--sae-input", "identity", "--out", str(out / "sae"), *dictionary],
        ["dict", "eval", str(out / "crosscoder"), "--acts", str(acts), *quiet_flag],
        ["dict", "eval", str(out / "sae"), "--acts", str(acts), *quiet_flag],
        ["analyze", str(out / "crosscoder"), "--compare", str(out / "sae"), "--out", str(report), "--seed", str(settings.seed), *quiet_flag],
        ["report", str(report)],
    ]


def demo_steps(plan: DemoPlan, out: Path, progress: bool) -> list:
    """The library calls behind :func:`demo_commands`, one per command, each returning what the command prints."""
    settings = plan.settings
    composer, acts, analysis = out / "composer", out / "acts", out / "analysis"
    dictionary = {**plan.dictionary, "progress": progress}

    def train():
        metrics = fit_composer(plan.composer, composer, progress=progress)
        return f"trained {settings.arch} on {settings.group}: test accuracy {metrics['test_accuracy']:.2%}"

    def evaluate():
        metrics = evaluate_composer(composer, progress=progress)
        return f"key irreps {', '.join(metrics['key_irreps']) or 'none'}; MLP FVE {metrics['fve_mlp']:.2%}"

    def collect():
        store = harvest(composer, DEMO_LAYER[settings.arch], settings.action, out=acts, device=settings.device, progress=progress)
        return f"harvested {' x '.join(map(str, store.shape))} activations"

    def dictionary_step(kind: str):
        def step():
            trained = train_dictionary(acts, kind, out=out / kind, **dictionary)
            return f"trained a {kind}: FVU {trained.history[-1]['fvu']:.4f} (last training batch)"
        return step

    def evaluation(kind: str):
        def step():
            summary = evaluate_dictionary_run(out / kind, acts, progress=progress)
            return f"{kind}: FVU {summary['fvu']:.4f}, L0 {summary['l0']:.2f}"
        return step

    def analyze():
        directory = analyze_runs([out / "crosscoder", out / "sae"], out=analysis, settings=plan.analysis, progress=progress)
        return "\n".join(comparison_lines(read_json(directory / "analysis.json")["comparison"]))

    def report():
        html, markdown = write_report(analysis)
        return f"report: {html}"

    return [train, evaluate, collect, dictionary_step("crosscoder"), dictionary_step("sae"), evaluation("crosscoder"),
            evaluation("sae"), analyze, report]
