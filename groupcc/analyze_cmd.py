"""``groupcc analyze`` (families, stabilisers, irreps, comparisons, plots) and ``groupcc report`` (HTML + Markdown)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from groupcc.eval.analysis import AnalysisSettings
from groupcc.eval.pipeline import analyze_runs
from groupcc.eval.report import find_analysis, write_report
from groupcc.training.runs import check_output, check_replaceable, lock, open_run, read_json

from .options import add_options, option_values

SETTINGS = ["n_families", "max_families", "stabiliser_tolerance", "min_explained", "matching_rows", "seed"]


def add_analyze_commands(commands) -> None:
    analyze = commands.add_parser("analyze", help="families, stabilisers, irrep spectra and irreps of a dictionary's features")
    analyze.add_argument("dictionary", help="dictionary run directory (from 'groupcc dict train')")
    analyze.add_argument("--compare", help="a second dictionary of the other kind (SAE or crosscoder) on the same activations")
    analyze.add_argument("--acts", help="activation store (default: the one the dictionary was trained on)")
    analyze.add_argument("--out", help="analysis directory (default DICTIONARY/analysis)")
    add_options(analyze, AnalysisSettings, SETTINGS, flags={"n_families": "--families", "stabiliser_tolerance": "--tolerance"})
    analyze.add_argument("--json", action="store_true", help="print analysis.json's comparison and family counts as JSON")
    analyze.add_argument("--quiet", action="store_true")
    analyze.set_defaults(handler=run_analyze)

    report = commands.add_parser("report", help="a self-contained HTML report and a Markdown summary of an analysis")
    report.add_argument("run", help="an analysis directory, or a directory with an analysis/ folder (a dictionary run, a demo)")
    report.add_argument("--out", help="where to write report.html and report.md (default: the analysis directory)")
    report.set_defaults(handler=run_report)


def run_analyze(args: argparse.Namespace) -> None:
    settings = AnalysisSettings(**option_values(args, SETTINGS))
    dictionaries = [args.dictionary] + ([args.compare] if args.compare is not None else [])
    out = analyze_runs(dictionaries, acts=args.acts, out=args.out, settings=settings, progress=not args.quiet)
    analysis = read_json(out / "analysis.json")
    if args.json:
        print(json.dumps({"analysis": str(out), "comparison": analysis["comparison"],
                          "families": {kind: entry["families"]["n_families"] for kind, entry in analysis["dictionaries"].items()}}, indent=1))
        return
    print(format_analysis(analysis, out))


def format_analysis(analysis: dict, out: Path) -> str:
    lines = [analysis["title"]]
    label_key = f"{analysis.get('label_kind') or 'irrep'}s"
    for kind, entry in analysis["dictionaries"].items():
        families = entry["families"]
        lines.append(f"{kind}: {entry['n_firing']} of {entry['n_features']} features fire; {families['n_families']} families")
        for row in families["table"]:
            labels = ", ".join(f"{name}×{count}" for name, count in row.get(label_key, {}).items())
            orders = ", ".join(f"|H|={order}×{count}" for order, count in row["stabiliser_orders"].items())
            lines.append(f"  family {row['family']}: {row['size']} features; stabilisers {orders}" + (f"; {label_key} {labels}" if labels else ""))
    lines += comparison_lines(analysis["comparison"])
    lines.append(f"wrote {out / 'analysis.json'} and plots in {out / 'plots'}   next: groupcc report {out}")
    return "\n".join(lines)


def comparison_lines(comparison: dict) -> list[str]:
    """One line per comparison of clusterings (``-`` for a score that is undefined: nothing to compare)."""
    def score(value) -> str:
        return "-" if value is None else f"{value:.3f}"
    return [f"{name}: ARI {score(scores['ari'])}, NMI {score(scores['nmi'])}, purity {score(scores['purity'])}, {scores['n_families']} families"
            for name, scores in comparison.items() if "ari" in scores]


#: The file that marks a directory as holding a report (``--out`` may only rewrite one of those).
REPORT_FILE = "report.html"


def run_report(args: argparse.Namespace) -> None:
    """Write the report into the analysis directory, or ``--out``: a new directory (removed again on an error), an
    empty one, or one holding an earlier report, never another run. The analysis directory's lock is held, so
    that an analysis rewriting it meanwhile is refused."""
    directory = find_analysis(args.run)
    out = directory if args.out is None else check_output(args.out, "report directory")
    if out.resolve() != directory.resolve():
        check_replaceable(out, True, REPORT_FILE, "report directory")
    with lock(directory), open_run(out, resume=True, what="report directory"):
        html, markdown = write_report(directory, out)
    print(f"report: {html}\nsummary: {markdown}")
