"""The harvester: every block equals the layer's activation on the explicitly transformed input."""

import numpy as np
import pytest
import torch
from torch import nn

from groupcc.groups import GroupError, get_group, pair_action
from groupcc.training.activation_store import open_store
from groupcc.training.composer_training import default_config, load_composer, fit_composer
from groupcc.training.harvest import composer_harvest_batches, harvest_to_store, iter_harvest, resolve_layer


@pytest.mark.parametrize("kind", ["left", "right", "conjugation"])
def test_pair_actions_are_actions(kind):
    group = get_group("S3")
    moved = pair_action(group, kind)
    n = group.order
    for g in range(n):
        for h in range(n):
            gh = group.mul(g, h)
            composed = moved[h][moved[g]] if kind == "right" else moved[g][moved[h]]
            np.testing.assert_array_equal(moved[gh], composed)
    np.testing.assert_array_equal(moved[0], np.arange(n * n))
    with pytest.raises(GroupError, match="unknown action 'up'"):
        pair_action(group, "up")


def explicit(group, kind, g, a, b):
    if kind == "left":
        return group.mul(g, a), b
    if kind == "right":
        return a, group.mul(b, g)
    return group.conjugate(g, a), group.conjugate(g, b)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    for arch, sizes in [("mlp", dict(d_embed=8, d_hidden=12)), ("transformer", dict(d_model=16, n_heads=2, d_head=8, d_mlp=12))]:
        path = tmp_path_factory.mktemp(arch)
        fit_composer(default_config("D3", arch, epochs=3, **sizes), path / "run", progress=False)
        out[arch] = load_composer(path / "run")
    return out


@pytest.mark.parametrize("arch, layer", [("mlp", "hidden"), ("mlp", "embed_a"), ("transformer", "resid_mid"), ("transformer", "hidden")])
@pytest.mark.parametrize("kind", ["left", "right", "conjugation"])
def test_blocks_equal_explicitly_transformed_inputs(runs, arch, layer, kind):
    run = runs[arch]
    group = run.group
    acts = torch.cat(list(composer_harvest_batches(run, layer, kind, progress=False, rows_per_forward=30))).numpy()
    n = group.order
    assert acts.shape[:2] == (n * n, n)
    module = resolve_layer(run.model, layer)
    for p in [0, 5, 17, 35]:
        a, b = divmod(p, n)
        for g in range(n):
            a2, b2 = explicit(group, kind, g, a, b)
            seen = []
            handle = module.register_forward_hook(lambda m, i, o: seen.append(o))
            with torch.no_grad():
                run.model(torch.tensor([a2]), torch.tensor([b2]))
            handle.remove()
            np.testing.assert_allclose(acts[p, g], seen[0][0].numpy(), rtol=1e-5, atol=1e-6)


def test_harvest_into_store_round_trips(runs, tmp_path):
    run = runs["mlp"]
    batches = composer_harvest_batches(run, "hidden", "left", progress=False, rows_per_forward=50)
    store = harvest_to_store(tmp_path / "acts", batches, run.group.order, group="D3", action="left", layer="hidden")
    direct = torch.cat(list(composer_harvest_batches(run, "hidden", "left", progress=False))).numpy()
    np.testing.assert_array_equal(open_store(tmp_path / "acts").read_rows(np.arange(36)), direct)
    assert store.describe()["group"] == "D3"


def test_bad_layer_and_nan_activations(runs, tmp_path):
    with pytest.raises(ValueError, match="layer 'mlp.fc9' not found in MLPComposer: expected one of .*hidden"):
        resolve_layer(runs["mlp"].model, "mlp.fc9")

    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Identity()

        def forward(self, x):
            return self.layer(x / 0.0 * 0.0)

    batches = iter_harvest(Broken(), "layer", 4, lambda idx: torch.ones(len(idx), 3), lambda x: (x.repeat(2, 1),), 2, progress=False)
    with pytest.raises(ValueError, match="NaN or infinite"):
        harvest_to_store(tmp_path / "nan", batches, 2)
    assert not (tmp_path / "nan").exists()
