"""hyvl.geometry: the per-geometry operations agree with each other and with hyvl.lorentz."""

import pytest
import torch
import torch.nn.functional as F

import hyvl
from hyvl import lorentz
from hyvl.errors import ConfigError
from hyvl.geometry import Euclidean, Lorentz, get_geometry

C = torch.tensor(0.7, dtype=torch.float64)


def _points(space, n, seed, d=8):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, d, generator=g, dtype=torch.float64)
    return space.lift(v, torch.tensor(0.0), C)


def test_get_geometry_names_the_choices():
    assert isinstance(get_geometry("lorentz"), Lorentz)
    assert isinstance(get_geometry("euclidean"), Euclidean)
    space = get_geometry("lorentz")
    assert get_geometry(space) is space
    with pytest.raises(ConfigError, match=r"'lorentz', 'euclidean'.*'poincare'"):
        get_geometry("poincare")


def test_model_space_follows_its_geometry():
    for name, cls in (("meru_tiny", Lorentz), ("clip_tiny", Euclidean)):
        with torch.device("meta"):
            model = hyvl.create_model(name)
        assert isinstance(model.space, cls) and model.space.name == model.geometry


@pytest.mark.parametrize("space", [Lorentz(), Euclidean()], ids=repr)
def test_similarity_distance_and_search_augmentation_rank_alike(space):
    q, y = _points(space, 5, 0), _points(space, 40, 1)
    dist = space.pairwise_distance(q, y, C)
    sim = space.pairwise_similarity(q, y, C)
    assert torch.equal(sim.argsort(dim=1, descending=True), dist.argsort(dim=1))
    # inner-product search over the augmented vectors finds the nearest items
    ip = space.augment_queries(q, C).double() @ space.augment_items(y, C).double().T
    assert torch.equal(ip.argmax(1), dist.argmin(1))
    # the re-rank formula from inner products and norms gives the same distances
    ip_s = q @ y.T
    again = space.distance_from_inner(ip_s, q.square().sum(-1, keepdim=True), y.square().sum(-1), C)
    torch.testing.assert_close(again, dist, rtol=1e-9, atol=1e-9)


def test_prototypes_average_where_each_geometry_should():
    feats = torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    log_alpha = torch.tensor(-0.5, dtype=torch.float64)
    hyp = Lorentz()
    lift = lambda f: hyp.lift(f, log_alpha, C)  # noqa: E731
    # MERU: the mean of the features (tangent vectors at the origin), lifted once
    expected = lorentz.exp_map0(feats.mean(1) * log_alpha.exp(), C)
    torch.testing.assert_close(hyp.prototypes(feats, lift), expected)
    # (not the mean of the lifted points, which is what a Euclidean average would give)
    assert (hyp.prototypes(feats, lift) - lift(feats).mean(1)).abs().max() > 1e-3
    # CLIP: embed (normalise), average, normalise
    euc = Euclidean()
    protos = euc.prototypes(feats, lambda f: euc.lift(f, None, None))
    torch.testing.assert_close(protos, F.normalize(F.normalize(feats, dim=-1).mean(1), dim=-1))


def test_mean_is_the_tangent_midpoint():
    space = Lorentz()
    a, b = _points(space, 6, 3), _points(space, 6, 4)
    mid = space.mean(torch.stack([a, b], dim=1), C)
    half = (lorentz.log_map0(a, C) + lorentz.log_map0(b, C)) / 2
    torch.testing.assert_close(mid, lorentz.exp_map0(half, C))
