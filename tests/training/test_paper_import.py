"""Importing runs of the paper's code: synthetic checkpoints in its format, built from our models with the paper's
element order, must import to models whose logits equal the paper-layout forward pass on every pair."""

import json
import math

import numpy as np
import pytest
import torch

from groupcc.errors import GroupccError
from groupcc.groups import get_group
from groupcc.training.composer_training import default_config, fit_composer, load_composer
from groupcc.training.composers import ComposerArchitecture, build_composer
from groupcc.training.paper_import import import_paper_run, paper_element_map, paper_split

FAMILIES = [("CyclicGroup", 6, "C6"), ("DihedralGroup", 5, "D5"), ("DihedralGroup", 4, "D4"),
            ("SymmetricGroup", 3, "S3"), ("SymmetricGroup", 4, "S4"), ("AlternatingGroup", 5, "A5")]


@pytest.mark.parametrize("family, k, name", FAMILIES)
def test_element_map_is_an_isomorphism_with_the_papers_numbering(family, k, name):
    group = get_group(name)
    phi, table = paper_element_map(family, k, group)
    assert sorted(phi.tolist()) == list(range(group.order))
    assert np.array_equal(phi[table], group.mult_table[phi[:, None], phi[None, :]])
    if family == "DihedralGroup":  # paper index r + n·s is r^r s^s: index k (s = 1, r = 1) is r·s, of order 2
        assert group.mult_table[phi[k + 1], phi[k + 1]] == 0


# The first elements of the paper's lists, as sympy 1.10-1.14 generate them (image arrays). The isomorphism check
# cannot see a change of sympy's order, because the map and the paper's table would change together.
PAPER_FIRST_ELEMENTS = {
    ("SymmetricGroup", 4): [[0, 1, 2, 3], [1, 2, 3, 0], [2, 3, 0, 1], [3, 1, 2, 0], [0, 2, 3, 1], [1, 3, 0, 2]],
    ("AlternatingGroup", 5): [[0, 1, 2, 3, 4], [1, 2, 3, 4, 0], [2, 3, 4, 0, 1], [3, 4, 0, 1, 2], [4, 2, 1, 3, 0],
                              [0, 2, 1, 4, 3]],
}


@pytest.mark.parametrize("family, k", list(PAPER_FIRST_ELEMENTS))
def test_the_papers_permutation_order_is_pinned_and_maps_to_the_inverses(family, k):
    group = get_group(f"{family[0]}{k}")
    phi, _ = paper_element_map(family, k, group)
    for paper_index, image in enumerate(PAPER_FIRST_ELEMENTS[family, k]):
        inverse = np.argsort(image)
        assert np.array_equal(group.permutations[phi[paper_index]], inverse), paper_index


def test_split_is_the_papers_floored_seeded_draw():
    n, frac, seed = 7, 0.3, 3
    phi = np.arange(n)
    train, test = paper_split(n, frac, seed, phi)
    torch.manual_seed(seed)  # what the paper's get_all_data does
    expected = torch.randperm(n * n)[: int(frac * n * n)]
    assert len(train) == math.floor(frac * n * n) == 14
    assert torch.equal(train, expected.sort().values)
    assert sorted(torch.cat([train, test]).tolist()) == list(range(n * n))


def paper_mlp_logits(state, x, y):
    """The paper's OneLayerMLP forward, written in its layout."""
    hidden = torch.relu(torch.hstack([state["W_x"][x], state["W_y"][y]]) @ state["W"])
    return hidden @ state["W_U"]


def paper_transformer_logits(state, x, y, n):
    """A one-layer TransformerLens forward (causal attention, no LayerNorm, ReLU) at the last position."""
    tokens = torch.stack([x, y, torch.full_like(x, n)], dim=1)
    resid = state["embed.W_E"][tokens] + state["pos_embed.W_pos"][None]
    q = torch.einsum("npd,hde->nhpe", resid, state["blocks.0.attn.W_Q"]) + state["blocks.0.attn.b_Q"][None, :, None]
    k = torch.einsum("npd,hde->nhpe", resid, state["blocks.0.attn.W_K"]) + state["blocks.0.attn.b_K"][None, :, None]
    v = torch.einsum("npd,hde->nhpe", resid, state["blocks.0.attn.W_V"]) + state["blocks.0.attn.b_V"][None, :, None]
    scores = torch.einsum("nhqe,nhke->nhqk", q, k) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(torch.triu(torch.ones(3, 3, dtype=torch.bool), 1), float("-inf"))
    z = torch.einsum("nhqk,nhke->nhqe", scores.softmax(-1), v)
    resid = resid + torch.einsum("nhqe,hed->nqd", z, state["blocks.0.attn.W_O"]) + state["blocks.0.attn.b_O"]
    hidden = torch.relu(resid @ state["blocks.0.mlp.W_in"] + state["blocks.0.mlp.b_in"])
    resid = resid + hidden @ state["blocks.0.mlp.W_out"] + state["blocks.0.mlp.b_out"]
    return (resid @ state["unembed.W_U"] + state["unembed.b_U"])[:, -1]


def paper_state_from(model, phi, arch):
    """Our model's weights in the paper's layout and element order (row x of the paper's is our row φ(x))."""
    p = {k: v.detach().clone() for k, v in model.state_dict().items()}
    idx = torch.as_tensor(phi)
    if arch == "mlp":
        return {"W_x": p["embed_a"][idx], "W_y": p["embed_b"][idx], "W": p["w_in"], "W_U": p["unembed"][:, idx]}
    n = len(phi)
    heads, d, d_head = p["w_q"].shape
    state = {"embed.W_E": torch.cat([p["embed"][:n][idx], p["embed"][n:]]), "pos_embed.W_pos": p["pos"],
             "blocks.0.attn.W_Q": p["w_q"], "blocks.0.attn.W_K": p["w_k"], "blocks.0.attn.W_V": p["w_v"],
             "blocks.0.attn.W_O": p["w_o"], "blocks.0.mlp.W_in": p["w_in"], "blocks.0.mlp.W_out": p["w_out"],
             "unembed.W_U": p["unembed"][:, idx]}
    zeros = {"blocks.0.attn.b_Q": (heads, d_head), "blocks.0.attn.b_K": (heads, d_head), "blocks.0.attn.b_V": (heads, d_head),
             "blocks.0.attn.b_O": (d,), "blocks.0.mlp.b_in": (p["w_in"].shape[1],), "blocks.0.mlp.b_out": (d,), "unembed.b_U": (n,)}
    state.update({k: torch.zeros(shape) for k, shape in zeros.items()})
    state["blocks.0.attn.mask"] = torch.tril(torch.ones(3, 3, dtype=torch.bool))
    return state


def write_paper_run(path, family, k, arch, state, seed=2, frac=0.5):
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"lr": 0.001, "weight_decay": 1, "betas": [0.9, 0.98], "layers": {"embed_dim": 8, "hidden_dim": 8},
           "model": {"mlp": "OneLayerMLP", "transformer": "Transformer"}[arch], "group": family,
           "group_parameter": k, "frac_train": frac, "num_epochs": 100, "seed": seed}
    (path / "cfg.json").write_text(json.dumps(cfg))
    torch.save(state, path / "model.pt")
    return path


SIZES = {"mlp": dict(d_embed=8, d_hidden=12), "transformer": dict(d_model=16, n_heads=2, d_head=8, d_mlp=20)}


@pytest.mark.parametrize("arch", ["mlp", "transformer"])
@pytest.mark.parametrize("family, k, name", [("DihedralGroup", 5, "D5"), ("SymmetricGroup", 3, "S3"), ("AlternatingGroup", 5, "A5")])
def test_imported_logits_equal_the_paper_forward_on_every_pair(tmp_path, arch, family, k, name):
    group = get_group(name)
    n = group.order
    phi, paper_table = paper_element_map(family, k, group)
    torch.manual_seed(0)
    source = build_composer(ComposerArchitecture(arch, n_elements=n, **SIZES[arch]))
    state = paper_state_from(source, phi, arch)
    paper = write_paper_run(tmp_path / "paper", family, k, arch, state)
    run, accuracy = import_paper_run(paper, tmp_path / "ours")
    x, y = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    x, y = x.reshape(-1), y.reshape(-1)
    expected = paper_mlp_logits(state, x, y) if arch == "mlp" else paper_transformer_logits(state, x, y, n)
    ours_pairs = torch.as_tensor(phi[x.numpy()] * n + phi[y.numpy()])
    with torch.no_grad():
        got = run.model(run.data.a[ours_pairs], run.data.b[ours_pairs])[:, torch.as_tensor(phi)]
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    # The split is the paper's, the answers are our product of the mapped elements.
    assert len(run.data.train) == int(0.5 * n * n)
    assert torch.equal(run.data.answer[ours_pairs], torch.as_tensor(phi[paper_table[x.numpy(), y.numpy()]]))
    assert 0.0 <= accuracy < 0.5  # a random model does not compute the product
    assert load_composer(tmp_path / "ours").config.group == name


def test_a_trained_model_round_trips_and_is_verified(tmp_path):
    config = default_config("S3", "mlp", epochs=1500, train_frac=0.9, lr=1e-2, seed=1, d_embed=16, d_hidden=32, n_checkpoints=1)
    fit_composer(config, tmp_path / "trained", progress=False)
    trained = load_composer(tmp_path / "trained")
    phi, _ = paper_element_map("SymmetricGroup", 3, trained.group)
    paper = write_paper_run(tmp_path / "paper", "SymmetricGroup", 3, "mlp", paper_state_from(trained.model, phi, "mlp"))
    run, accuracy = import_paper_run(paper, tmp_path / "ours")
    assert accuracy == 1.0
    for name, tensor in trained.model.state_dict().items():
        assert torch.equal(run.model.state_dict()[name], tensor)


@pytest.mark.parametrize("change, message", [
    ({"model": "TwoLayerMLP"}, "model is 'TwoLayerMLP'"),
    ({"group": "QuaternionGroup"}, "group is 'QuaternionGroup'"),
    ({"frac_train": 1.5}, "frac_train is 1.5"),
    ({"group_parameter": 4, "group": "AlternatingGroup"}, "only AlternatingGroup 5"),
])
def test_bad_configs_are_refused_in_one_line(tmp_path, change, message):
    group = get_group("S3")
    phi, _ = paper_element_map("SymmetricGroup", 3, group)
    state = paper_state_from(build_composer(ComposerArchitecture("mlp", n_elements=6, **SIZES["mlp"])), phi, "mlp")
    paper = write_paper_run(tmp_path / "paper", "SymmetricGroup", 3, "mlp", state)
    cfg = json.loads((paper / "cfg.json").read_text())
    (paper / "cfg.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(GroupccError, match=message):
        import_paper_run(paper, tmp_path / "ours")
    assert not (tmp_path / "ours").exists()


def test_overwrite_replaces_an_earlier_composer_run_only(tmp_path):
    group = get_group("S3")
    phi, _ = paper_element_map("SymmetricGroup", 3, group)
    state = paper_state_from(build_composer(ComposerArchitecture("mlp", n_elements=6, **SIZES["mlp"])), phi, "mlp")
    paper = write_paper_run(tmp_path / "paper", "SymmetricGroup", 3, "mlp", state)
    with pytest.raises(GroupccError, match=r"'.*paper' exists and is not a composer run \(it has no config.json\)"):
        import_paper_run(paper, paper, overwrite=True)  # it would have replaced its own input
    assert sorted(p.name for p in paper.iterdir()) == ["cfg.json", "model.pt"]
    import_paper_run(paper, tmp_path / "ours")
    import_paper_run(paper, tmp_path / "ours", overwrite=True)


def test_wrong_shapes_and_nonzero_biases_name_the_key(tmp_path):
    group = get_group("S3")
    phi, _ = paper_element_map("SymmetricGroup", 3, group)
    state = paper_state_from(build_composer(ComposerArchitecture("mlp", n_elements=6, **SIZES["mlp"])), phi, "mlp")
    state["W_U"] = state["W_U"][:, :5]
    with pytest.raises(GroupccError, match=r"W_U has shape \[12, 5\], expected \[12, 6\]"):
        import_paper_run(write_paper_run(tmp_path / "p1", "SymmetricGroup", 3, "mlp", state), tmp_path / "o1")
    tstate = paper_state_from(build_composer(ComposerArchitecture("transformer", n_elements=6, **SIZES["transformer"])), phi, "transformer")
    tstate["blocks.0.mlp.b_in"] += 0.5
    with pytest.raises(GroupccError, match="bias blocks.0.mlp.b_in is not zero"):
        import_paper_run(write_paper_run(tmp_path / "p2", "SymmetricGroup", 3, "transformer", tstate), tmp_path / "o2")
    (tmp_path / "p3").mkdir()
    (tmp_path / "p3" / "cfg.json").write_text(json.dumps({"model": "OneLayerMLP", "group": "SymmetricGroup", "group_parameter": 3, "frac_train": 0.5}))
    (tmp_path / "p3" / "model.pt").write_bytes(b"not a torch file")
    with pytest.raises(GroupccError, match="not a torch state dict"):
        import_paper_run(tmp_path / "p3", tmp_path / "o3")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "p3" / "model.pt")  # a whole module, as the paper's older code saved
    with pytest.raises(GroupccError, match=r"holds pickled objects.*state_dict\(\)"):
        import_paper_run(tmp_path / "p3", tmp_path / "o3")
    assert not any((tmp_path / name).exists() for name in ("o1", "o2", "o3"))


def test_cli_import_then_eval_shows_the_papers_stored_numbers(tmp_path, capsys):
    from groupcc.cli import main

    group = get_group("D5")
    phi, _ = paper_element_map("DihedralGroup", 5, group)
    state = paper_state_from(build_composer(ComposerArchitecture("mlp", n_elements=10, **SIZES["mlp"])), phi, "mlp")
    paper = write_paper_run(tmp_path / "paper", "DihedralGroup", 5, "mlp", state)
    (paper / "summary_metrics.json").write_text(json.dumps({"percent_x_embed_explained": 0.9971, "test_loss": 6.3e-06,
                                                             "total_hidden_restricted_loss": float("nan")}))
    assert main(["composer", "import", str(paper), "--out", str(tmp_path / "ours")]) == 0
    out, err = capsys.readouterr()
    assert "imported the paper's mlp on D5 (seed 2, 50 training pairs)" in out
    assert err.count("\n") == 1 and "computes the product on" in err  # an untrained model is flagged in one line
    stored = json.loads((tmp_path / "ours" / "metrics.json").read_text())
    assert stored["imported"]["paper_summary_metrics"] == {"percent_x_embed_explained": 0.9971, "test_loss": 6.3e-06}
    assert main(["composer", "eval", str(tmp_path / "ours"), "--no-progress", "--quiet"]) == 0
    assert "the paper's stored metrics (summary_metrics.json): W_a 99.71%  test loss 6.3e-06" in capsys.readouterr().out
