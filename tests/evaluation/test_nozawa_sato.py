"""Nozawa & Sato's bound on embeddings against a hand-written per-anchor reference (their
``code/bound.py``, term by term) and its published collision terms."""

import math

import pytest
import torch

from contrastlab.evaluation.nozawa_sato import nozawa_sato_report


def _reference(z1, z2, zbar, y, means, b, t, perms):
    """Loops over batches and anchors, one formula at a time, in Python floats."""
    z1 = torch.nn.functional.normalize(z1.double(), dim=1).tolist()
    z2 = torch.nn.functional.normalize(z2.double(), dim=1).tolist()
    zbar, means, y = zbar.double().tolist(), means.double().tolist(), y.tolist()
    c = len(means)

    def dot(u, v):
        return sum(a * b for a, b in zip(u, v, strict=True))

    tot = dict(info=0.0, sup=0.0, sub=0.0, col=0.0, curl=0.0, cover=0.0, d=0.0)
    n_anchor = 0
    for perm in perms:
        for j in range(len(perm) // b):
            batch = perm[j * b:(j + 1) * b]
            labels = [y[i] for i in batch]
            present = sorted(set(labels))
            counts = {k: labels.count(k) for k in present}
            covers = len(present) == c
            for i in batch:
                s = [dot(z1[i], z2[m]) / t for m in batch]
                tot["info"] += math.log(sum(math.exp(v) for v in s)) - dot(z1[i], z2[i]) / t
                classes = range(c) if covers else present
                lse = math.log(sum(math.exp(dot(z1[i], means[k]) / t) for k in classes))
                ce = lse - dot(z1[i], means[y[i]]) / t
                tot["sup" if covers else "sub"] += ce
                if counts[y[i]] == 1:
                    tot["curl"] += ce
                diff = [m - a for m, a in zip(means[y[i]], zbar[i], strict=True)]
                tot["d"] += min(0.0, dot(z1[i], diff)) / t
                n_anchor += 1
            tot["cover"] += b if covers else 0
            tot["col"] += sum(n * math.log(n) for n in counts.values() if n >= 2)
    m = {k: v / n_anchor for k, v in tot.items()}
    return {"info_loss": m["info"], "sup_loss": m["sup"], "sub_loss": m["sub"],
            "collision": m["col"], "d": m["d"], "upsilon": m["cover"],
            "lower_bound": 0.5 * (m["sup"] + m["sub"] + m["col"]) + m["d"],
            "curl_lower_bound": m["curl"] + m["col"] + m["d"]}


def _features(n=60, c=4, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    centres = torch.randn(c, d, generator=g)
    views = [centres[y] + 0.7 * torch.randn(n, d, generator=g) for _ in range(3)]
    unit = [torch.nn.functional.normalize(v, dim=1) for v in views]
    zbar = torch.stack(unit).mean(0)
    means = torch.stack([zbar[y == k].mean(0) for k in range(c)])
    return views[0], views[1], zbar, y, means


@pytest.mark.parametrize("b,t", [(4, 0.5), (7, 1.0), (12, 0.2), (60, 0.5)])
def test_matches_the_hand_written_reference(b, t):
    z1, z2, zbar, y, means = _features()
    rep = nozawa_sato_report(z1, z2, zbar, y, means, b, t, torch.Generator().manual_seed(3), 3)
    g = torch.Generator().manual_seed(3)
    perms = [torch.randperm(y.shape[0], generator=g).tolist() for _ in range(3)]
    ref = _reference(z1, z2, zbar, y, means, b, t, perms)
    for key, want in ref.items():
        assert getattr(rep, key) == pytest.approx(want, rel=1e-10, abs=1e-12), key
    assert rep.batches == 3 * (60 // b) and rep.batch_size == b
    assert 0.0 <= rep.upsilon <= 1.0 and rep.d <= 0.0


def test_collision_term_is_nozawa_satos_published_value():
    # their CIFAR-10 table: Col 1.32 / 1.93 / 2.58 / 3.26 / 3.94 at K + 1 = 32 ... 512 (C = 10)
    g = torch.Generator().manual_seed(0)
    n, c = 20480, 10
    y = torch.arange(n) % c
    z = torch.randn(n, 3, generator=g)
    means = torch.randn(c, 3, generator=g)
    for b, want in ((32, 1.32), (64, 1.93), (128, 2.58), (256, 3.26), (512, 3.94)):
        rep = nozawa_sato_report(z, z, z, y, means, b, 0.5, g, rounds=2)
        assert rep.collision == pytest.approx(want, abs=0.01), b


def test_bound_holds_for_features_of_a_known_model():
    # views = class centre + noise; zbar and the means from many augmentations: the theorem's
    # expectation setting, so the lower bounds stay below the measured L_Info at every K + 1
    g = torch.Generator().manual_seed(1)
    n, c, d = 2000, 5, 8
    y = torch.arange(n) % c
    centres = 2.0 * torch.randn(c, d, generator=g)
    x = centres[y] + torch.randn(n, d, generator=g)
    views = [torch.nn.functional.normalize(x + 0.5 * torch.randn(n, d, generator=g), dim=1)
             for _ in range(16)]
    zbar = torch.stack(views).mean(0)
    means = torch.stack([zbar[y == k].mean(0) for k in range(c)])
    for b in (4, 8, 32, 128):
        rep = nozawa_sato_report(views[0], views[1], zbar, y, means, b, 0.5, g, rounds=4)
        assert max(rep.lower_bound, rep.curl_lower_bound) < rep.info_loss, (b, rep)


@pytest.mark.parametrize("kwargs,field", [
    ({"batch_size": 1}, "batch_size"), ({"batch_size": 61}, "batch_size"),
    ({"temperature": 0.0}, "temperature"), ({"rounds": 0}, "rounds"),
])
def test_bad_input_names_the_field(kwargs, field):
    z1, z2, zbar, y, means = _features()
    args = {"batch_size": 4, "temperature": 0.5, "generator": torch.Generator(), **kwargs}
    with pytest.raises(ValueError, match=field):
        nozawa_sato_report(z1, z2, zbar, y, means, **args)
    with pytest.raises(ValueError, match="zbar"):
        nozawa_sato_report(z1, z2, zbar[:, :2], y, means, 4, 0.5, torch.Generator())


def test_the_trainer_measures_the_bound_when_asked(tmp_path):
    from contrastlab.train import train
    from contrastlab.train.config import ConfigError, hashed_config, parse_config

    cfg = {"seed": 0, "data": {"name": "synthetic", "seed": 0, "pairs": "augment",
                               "options": {"classes": 4, "dim": 8, "n_train": 400,
                                           "n_test": 200}},
           "model": {"encoder": "mlp", "out_dim": 8, "options": {"hidden": 32, "depth": 2}},
           "loss": {"name": "infonce", "temperature": 0.5, "normalize": "sphere"},
           "optim": {"name": "adam", "lr": 0.003},
           "train": {"epochs": 1, "batch_size": 32, "progress": False},
           "eval": {"every": 0, "max_train": 200, "max_test": 200, "linear_probe": False,
                    "final_lsup": False, "final_knn": False, "final_nozawa_sato": True}}
    fit = train(parse_config(cfg))
    ns = fit.reports["nozawa_sato"]
    assert ns["batch_size"] == 32 and ns["temperature"] == 0.5 and ns["batches"] == 60
    assert ns["lower_bound"] < ns["info_loss"] and ns["d"] <= 0.0
    again = train(parse_config(cfg)).reports["nozawa_sato"]
    assert again == ns  # fixed draws from the run's seed
    # off by default, and then not in the run id (runs of earlier versions keep theirs)
    cfg["eval"]["final_nozawa_sato"] = False
    assert "final_nozawa_sato" not in hashed_config(parse_config(cfg))["eval"]
    cfg["data"]["pairs"] = "latent"
    cfg["eval"]["final_nozawa_sato"] = True
    with pytest.raises(ConfigError, match=r"eval\.final_nozawa_sato: true needs data\.pairs"):
        parse_config(cfg)
