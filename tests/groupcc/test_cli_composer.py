"""``groupcc composer train`` and ``eval`` end to end on a tiny group, and their one-line errors."""

import json
import sys

import pytest

from groupcc.cli import main

TINY = ["--epochs", "1500", "--train-frac", "0.9", "--lr", "1e-2", "--d-embed", "32", "--d-hidden", "64", "--quiet"]


def test_train_then_eval(tmp_path, capsys):
    out = tmp_path / "s3"
    assert main(["composer", "train", "--group", "S3", "--out", str(out), *TINY]) == 0
    assert "test accuracy 100.00%" in capsys.readouterr().out
    assert main(["composer", "eval", str(out), "--json", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    stored = json.loads((out / "metrics.json").read_text())
    assert stored["interpretability"] == printed and stored["training"]["test_accuracy"] == 1.0
    assert {p.name for p in (out / "plots").iterdir()} == {"training_curves.png", "logit_similarity.png", "progress_measures.png"}
    assert len(json.loads((out / "progress.json").read_text())) >= 10


def test_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    cases = [
        ["composer", "train", "--group", "X5"],
        ["composer", "train", "--group", "S3", "--task", "a*q"],
        ["composer", "train", "--group", "S3", "--train-frac", "0"],
        ["composer", "train", "--group", "S3", "--out", str(tmp_path / "taken")],
        ["composer", "eval", str(tmp_path / "nothing")],
    ]
    for argv in cases:
        assert main(argv) != 0
        out, err = capsys.readouterr()
        assert err.count("\n") == 1 and err.startswith("groupcc: error: "), (argv, err)


def test_run_files_of_the_wrong_json_type_are_one_line_errors(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["composer", "train", "--group", "S3", "--out", str(out), "--epochs", "3", "--d-embed", "4", "--d-hidden", "4", "--quiet"]) == 0
    (out / "metrics.json").write_text("null")
    (out / "history.json").write_text("{}")
    cases = [(["composer", "table", str(out)], f"{str(out / 'metrics.json')!r} is corrupt: expected a JSON object, found null"),
             (["composer", "eval", str(out), "--quiet"], f"{str(out / 'history.json')!r} is corrupt: expected a JSON array, found object")]
    (tmp_path / "listed").mkdir()
    (tmp_path / "listed" / "config.json").write_text("[]")
    for argv in (["composer", "eval"], ["harvest", "--out", str(tmp_path / "acts"), "--run"],
                 ["composer", "train", "--group", "S3", "--resume", "--out"]):
        cases.append((argv + [str(tmp_path / "listed")], f"{str(tmp_path / 'listed' / 'config.json')!r} is corrupt: expected a JSON object, found array"))
    capsys.readouterr()
    for argv, message in cases:
        assert main(argv) == 1, argv
        assert capsys.readouterr().err == f"groupcc: error: {message}\n", argv
    assert not (tmp_path / "acts").exists()


def test_overwrite_replaces_an_earlier_composer_run_only(tmp_path, capsys):
    (tmp_path / "cc").mkdir()
    (tmp_path / "cc" / "config.json").write_text('{"format": "groupcc-dictionary"}')
    assert main(["composer", "train", "--group", "S3", "--out", str(tmp_path / "cc"), "--overwrite", "--epochs", "2"]) == 1
    assert capsys.readouterr().err == (f"groupcc: error: {str(tmp_path / 'cc')!r} exists and is not a composer run (its config.json "
                                       "records 'groupcc-dictionary', not 'composer'): expected a new path, or an earlier composer run to replace\n")
    assert [p.name for p in (tmp_path / "cc").iterdir()] == ["config.json"]


def test_a_model_that_did_not_generalise_gets_a_warning(tmp_path, capsys):
    out = tmp_path / "short"
    short = ["--epochs", "3", "--train-frac", "0.5", "--d-embed", "8", "--d-hidden", "16", "--quiet"]
    assert main(["composer", "train", "--group", "S3", "--out", str(out), *short]) == 0
    captured = capsys.readouterr()
    assert "next: groupcc composer eval" in captured.out
    assert "without generalising" not in captured.out and "without generalising" in captured.err  # on stderr only
    assert "--train-frac (now 0.5)" in captured.err and "--epochs (now 3)" in captured.err


def test_a_tiny_group_that_learned_the_product_but_vetoes_it_is_diagnosed(tmp_path, capsys):
    # C5 under the defaults: the interaction ranks both held-out answers first, the row-and-column part puts them last.
    out = tmp_path / "c5"
    assert main(["composer", "train", "--group", "C5", "--out", str(out), "--epochs", "1500", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "without generalising" in err and f"composer eval {out}" in err
    share = float(err.split("ranks the held-out answer first on ")[1].split("%")[0])
    margin = float(err.split("mean margin ")[1].split(")")[0])
    assert share >= 50 and margin < 0  # measured: 100 % and -15


def test_the_veto_diagnosis_is_silent_when_the_interaction_does_no_better(tmp_path, capsys, monkeypatch):
    import groupcc.composer_cmd as composer_cmd

    no_better = {"logits": -2.0, "row_column": -3.0, "interaction": -1.0, "answer_first": 0.5, "interaction_answer_first": 0.5}
    monkeypatch.setattr(composer_cmd, "run_held_out_margins", lambda run: no_better)
    assert main(["composer", "train", "--group", "C5", "--out", str(tmp_path / "c5"), "--epochs", "20", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "without generalising" in err and "ranks the held-out answer first" not in err


def test_sigterm_during_training_exits_with_the_resume_command(tmp_path, monkeypatch):
    import groupcc.composer_cmd as composer_cmd

    from groupcc.training.runs import TrainingInterrupted

    def stopped_by_sigterm(*args, **kwargs):  # what fit_composer raises once SIGTERM stopped the loop and it saved the state
        raise TrainingInterrupted(7)

    monkeypatch.setattr(composer_cmd, "fit_composer_seeds", stopped_by_sigterm)
    out = tmp_path / "stopped"
    with pytest.raises(SystemExit) as stopped:  # the interpreter prints it as one line and exits 1
        main(["composer", "train", "--group", "S3", "--out", str(out), "--quiet"])
    message = str(stopped.value.code)
    assert "\n" not in message and message.endswith(f"--out {out} --resume'")


def test_seeds_train_together_and_tabulate(tmp_path, capsys):
    """`--seeds 1-2` writes one ordinary run per seed; `composer table` puts them in one row, mean ± sd, in Markdown
    and CSV, with the paper's value only for the paper's groups."""
    out = tmp_path / "s3"
    assert main(["composer", "train", "--group", "S3", "--seeds", "1-2", "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "seed 1" in printed and "seed 2" in printed
    runs = [out / "s1", out / "s2"]
    assert all((run / "model.safetensors").exists() for run in runs)
    assert main(["composer", "table", *map(str, runs)]) == 0
    table = capsys.readouterr().out
    assert "| S3 | 1,2 |" in table and " ± " in table and "(" not in table.split("| S3 |")[1].split("\n")[0]
    assert main(["composer", "table", *map(str, runs), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("group,arch,task,seeds,metric,mean,sd,paper") and len(lines) == 1 + 8
    fve = {line.split(",")[4]: float(line.split(",")[5]) for line in lines[1:]}
    assert all(0 <= fve[name] <= 1 for name in ("W_a", "W_b", "W_U", "MLP", "ρ(ab)"))


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "3-1"], "expected seeds >= 0"),
    (["--seeds", "1,1"], "distinct seeds"),
    (["--seeds", "1-2", "--seed", "3"], "either --seed or --seeds"),
    (["--lr", "nan"], "lr must be a finite number"),
    (["--patience", "-1"], "patience must be"),
])
def test_bad_seed_and_training_values_are_one_line(tmp_path, capsys, argv, message):
    try:
        code = main(["composer", "train", "--group", "S3", "--out", str(tmp_path / "run"), *argv])
    except SystemExit as stopped:  # argparse's errors and messages given to SystemExit, as the interpreter prints them
        code = stopped.code
        if isinstance(code, str):
            print(code, file=sys.stderr)
    assert code not in (0, None)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "run").exists()


def test_resume_refuses_contradicting_options(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["composer", "train", "--group", "S3", "--out", str(out), "--epochs", "20", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["composer", "train", "--group", "S4", "--out", str(out), "--resume"]) != 0
    assert "the run has group='S3'" in capsys.readouterr().err
    assert main(["composer", "train", "--group", "S3", "--out", str(out), "--epochs", "50", "--resume"]) != 0
    assert "the run has epochs=20" in capsys.readouterr().err
