"""The training loop: learning, exact resume, k independent of the batch, NaN, the pool losses."""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

import pytest
import torch

import contrastlab.train as T
import contrastlab.train.loop as train_loop
import contrastlab.train.step as train_step
from contrastlab.data.registry import load_dataset
from contrastlab.losses import (
    NegativeSampler,
    hard_contrastive,
    nce_loss,
    normalize,
    pool_hard_contrastive,
    pool_nce,
)
from contrastlab.train.build import as_train_data
from contrastlab.train.config import parse_config, run_id
from tests.experiments.helpers import strip_seconds


def _cfg(**sections: Any) -> Any:
    raw: dict[str, Any] = {
        "seed": 0,
        "data": {"name": "synthetic", "options": {"classes": 4, "dim": 8, "n_train": 512,
                                                  "n_test": 256}},
        "model": {"encoder": "mlp", "out_dim": 4, "options": {"hidden": 32}},
        "loss": {"name": "ucl", "k": 16},
        "optim": {"lr": 0.003},
        "train": {"epochs": 3, "batch_size": 64, "progress": False, "threads": 1},
        "eval": {"final_lsup": False, "final_knn": False},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_config(raw)


@pytest.fixture(scope="module")
def data() -> Any:
    return load_dataset("synthetic", seed=0, classes=4, dim=8, n_train=512, n_test=256)


def test_separable_mixture_reaches_high_probe_accuracy() -> None:
    cfg = _cfg(
        data={"options": {"classes": 5, "dim": 10, "n_train": 1000, "n_test": 500}},
        loss={"name": "hucl", "k": 32, "beta": 1.0},
        train={"epochs": 4, "batch_size": 100},
        eval={"every": 0},
    )
    t0 = time.perf_counter()
    result = T.train(cfg)
    elapsed = time.perf_counter() - t0
    assert result.status == "done"
    last = result.epochs[-1]
    assert last["probe_acc"] > 0.95
    assert result.reports["downstream"]["linear_probe"]["bias-free"]["accuracy"] > 0.95
    assert last["mc_acc"] > 0.95
    assert len(result.epochs) == 4 and "probe_acc" not in result.epochs[0]  # eval.every = 0
    assert elapsed < 60, f"took {elapsed:.1f} s"


@pytest.mark.parametrize("loss", [{"name": "hucl", "k": 8, "beta": 2.0},
                                  {"name": "infonce"}])
def test_resume_reproduces_the_uninterrupted_run(tmp_path: Any, data: Any, loss: dict) -> None:
    cfg = _cfg(loss=loss, optim={"warmup_epochs": 1}, train={"epochs": 3},
               model={"options": {"hidden": 32, "batch_norm": True}})
    full = T.train(cfg, data, checkpoint_dir=tmp_path / "a")
    part = T.train(cfg, data, checkpoint_dir=tmp_path / "b", stop_after=1)
    assert part.status == "stopped" and len(part.epochs) == 1
    resumed = T.train(cfg, data, checkpoint_dir=tmp_path / "b")
    assert resumed.resumed_from == 1 and resumed.status == "done"
    assert resumed.epochs == full.epochs  # every metric of every epoch, exactly
    assert strip_seconds(resumed.reports) == strip_seconds(full.reports)
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    # resuming a finished run recomputes nothing but the final reports, identically
    again = T.train(cfg, data, checkpoint_dir=tmp_path / "b")
    assert again.resumed_from == 3 and again.epochs == full.epochs
    assert strip_seconds(again.reports) == strip_seconds(full.reports)


def test_pool_is_encoded_once_per_step(data: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    build = T.build_model

    def counting_build(cfg: Any, shape: tuple[int, ...]) -> Any:
        model = build(cfg, shape)

        def hook(module: Any, args: Any) -> None:
            if module.training:
                calls.append(int(args[0].shape[0]))

        model.register_forward_pre_hook(hook)
        return model

    monkeypatch.setattr(train_loop, "build_model", counting_build)
    cfg = _cfg(loss={"name": "ucl", "k": 64, "pool_size": None},
               train={"epochs": 1, "batch_size": 8, "steps_per_epoch": 5},
               eval={"every": 0, "geometry": False, "mean_classifier": False,
                     "linear_probe": False, "heldout_loss": False, "final_probes": []})
    assert cfg.loss.pool_size == 64  # max(k, batch)
    result = T.train(cfg, data)
    assert result.status == "done"
    # one encoder call per step, of the 2B views and the k-sized pool: not B * k rows
    assert calls == [2 * 8 + 64] * 5


def _pairs(n: int = 12, d: int = 5, c: int = 3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    z = normalize(torch.randn(n, d, generator=g, dtype=torch.float64), "sphere")
    labels = torch.arange(n) % c
    return z, labels


@pytest.mark.parametrize("negatives", ["marginal", "other-class"])
@pytest.mark.parametrize("exact", [True, "mean"])
def test_pool_loss_matches_the_batch_loss_when_the_pool_is_the_batch(
    negatives: str, exact: Any
) -> None:
    z, labels = _pairs()
    pos_i, pos_p = torch.nonzero(labels[:, None] == labels[None, :], as_tuple=True)
    for beta in (0.0, 2.0):
        want = hard_contrastive(z, labels, negatives, beta=beta, k=7, temperature=0.5,
                                normalize="none", exact=exact)
        got = pool_hard_contrastive(z[pos_i], z[pos_p], labels[pos_i], z, labels, negatives,
                                      beta=beta, k=7, temperature=0.5, exact=exact)
        torch.testing.assert_close(got, want)


def test_sampled_pool_loss_averages_to_the_exact_loss() -> None:
    z, labels = _pairs(n=10)
    pool, pool_labels = _pairs(n=40, seed=1)
    exact = pool_hard_contrastive(z[:5], z[5:], labels[:5], pool, pool_labels, "marginal",
                                    beta=3.0, k=4, exact=True, reduction="none")
    reps = 2000  # every pair 2000 times: 2000 independent draws of its k negatives at once
    draws = pool_hard_contrastive(
        z[:5].repeat(reps, 1), z[5:].repeat(reps, 1), labels[:5].repeat(reps), pool,
        pool_labels, "marginal", beta=3.0, k=4, reduction="none",
        generator=torch.Generator().manual_seed(0)).reshape(reps, 5)
    mean, sem = draws.mean(dim=0), draws.std(dim=0) / math.sqrt(reps)
    assert bool(((mean - exact).abs() < 4 * sem).all())
    assert float((mean - exact).abs().max()) > 0  # it is a sampled estimate, not the same code


def test_pool_nce_matches_nce_loss_on_the_drawn_negatives() -> None:
    z, labels = _pairs(n=8)
    pool, pool_labels = _pairs(n=30, seed=3)
    got = pool_nce(z[:4], z[4:], labels[:4], pool, pool_labels, sampler="uniform", k=6,
                     temperature=0.5, generator=torch.Generator().manual_seed(5))
    scores = z[:4] @ pool.T
    idx = NegativeSampler("uniform")(scores, 6, generator=torch.Generator().manual_seed(5))
    want = nce_loss(z[:4], z[4:], pool[idx], loss="infonce", temperature=0.5)
    torch.testing.assert_close(got, want)


def test_nan_stops_the_run(data: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    real = T.contrastive_loss
    seen = {"n": 0}

    def poisoned(*args: Any, **kwargs: Any) -> torch.Tensor:
        seen["n"] += 1
        out = real(*args, **kwargs)
        return out * float("nan") if seen["n"] == 5 else out

    monkeypatch.setattr(train_step, "contrastive_loss", poisoned)
    result = T.train(_cfg(train={"epochs": 2}), data)
    assert result.status == "nan"
    assert result.error is not None and "non-finite loss at epoch 1, step 5" in result.error
    assert result.epochs == [] and result.reports == {}


def test_eval_schedule_and_metrics(data: Any) -> None:
    cfg = _cfg(train={"epochs": 3}, eval={"every": 2})
    result = T.train(cfg, data)
    have = [("probe_acc" in m, "etf_distance" in m, "heldout_loss" in m) for m in result.epochs]
    assert have == [(False, False, False), (True, True, True), (True, True, True)]
    assert [m["epoch"] for m in result.epochs] == [1, 2, 3]
    assert set(result.reports) == {"geometry", "downstream", "convergence"}
    # 3 epochs, evaluated at 2 and 3: the reference of the last-20 % window is epoch 2
    conv = result.reports["convergence"]
    assert (conv["from_epoch"], conv["to_epoch"]) == (2, 3)
    assert result.epochs[-1]["converged"] == float(conv["converged"])
    assert "converged" not in result.epochs[0]


def test_lr_schedule_warmup_then_cosine() -> None:
    f = [T.lr_factor(s, 10, 2, "cosine", 0.1) for s in range(10)]
    assert f[0] == pytest.approx(0.5) and f[1] == pytest.approx(1.0)
    assert f[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(f[1:]))
    assert T.lr_factor(10, 10, 2, "cosine", 0.1) == pytest.approx(0.1)
    assert T.lr_factor(7, 10, 2, "constant", 0.0) == 1.0


@pytest.mark.parametrize("loss", [{"name": "supcon"}, {"name": "debiased-hard"},
                                  {"name": "nce", "k": 8, "sampler": "tilted", "beta": 1.0},
                                  {"name": "hscl", "k": 4}, {"name": "scl", "k": 4}])
def test_every_loss_trains(data: Any, loss: dict) -> None:
    cfg = _cfg(loss=loss, train={"epochs": 1, "steps_per_epoch": 3},
               eval={"every": 0, "linear_probe": False, "final_probes": []})
    result = T.train(cfg, data)
    assert result.status == "done" and math.isfinite(result.epochs[0]["train_loss"])


def test_shuffled_label_control_scores_near_chance(data: Any) -> None:
    from contrastlab.train.config import run_id

    base = dict(data={"options": {"classes": 5, "dim": 10, "n_train": 1000, "n_test": 500}},
                loss={"name": "ucl", "k": 32}, train={"epochs": 4, "batch_size": 100},
                eval={"every": 0})
    good = T.train(_cfg(**base))
    shuffled_cfg = _cfg(**{**base, "data": {**base["data"], "shuffle_labels": True}})
    bad = T.train(shuffled_cfg)
    assert good.epochs[-1]["mc_acc"] > 0.9
    assert bad.epochs[-1]["mc_acc"] < 0.4  # chance is 0.2
    # the flag changes the run id only when set (earlier run ids are kept)
    assert run_id(shuffled_cfg) != run_id(_cfg(**base))
    plain = _cfg(**base)
    assert "shuffle_labels" not in __import__("json").dumps(
        __import__("contrastlab.train.config", fromlist=["hashed_config"]).hashed_config(plain))


def test_shuffled_labels_permutes_only_the_training_labels(data: Any) -> None:
    d = as_train_data(data)
    s = T.shuffled_labels(d, 0)
    assert torch.equal(s.y_test, d.y_test) and torch.equal(s.x_train, d.x_train)
    assert torch.equal(torch.bincount(s.y_train), torch.bincount(d.y_train))
    assert not torch.equal(s.y_train, d.y_train)
    assert torch.equal(T.shuffled_labels(d, 0).y_train, s.y_train)  # seeded


# --- k means k: distinct negatives (loss.replacement) ------------------------------------------


@pytest.mark.parametrize("sampler", ["uniform", "tilted", "other-class"])
def test_pool_draws_without_replacement_are_distinct(sampler: str) -> None:
    z, labels = _pairs(n=40, c=4)
    pool, pool_labels = _pairs(n=64, c=2, seed=1)  # other-class: 32 candidates per anchor
    k = 32 if sampler == "other-class" else 64  # k = the allowed candidates
    for replace, want in ((False, k), (True, None)):
        stats: dict[str, float] = {}
        pool_nce(z[:20], z[20:], labels[:20] % 2, pool, pool_labels, sampler=sampler,
                   beta=2.0, k=k, generator=torch.Generator().manual_seed(0), replace=replace,
                   stats=stats)
        if want is not None:  # the mean of counts <= k equals k: every row has k distinct
            assert stats["distinct_negatives"] == want
        else:  # i.i.d. at k = the candidates: about 63 % distinct
            assert stats["distinct_negatives"] < 0.75 * k
    stats = {}
    pool_hard_contrastive(z[:20], z[20:], labels[:20] % 2, pool, pool_labels,
                            "other-class" if sampler == "other-class" else "marginal", beta=2.0,
                            k=k, replace=False, stats=stats,
                            generator=torch.Generator().manual_seed(0))
    assert stats["distinct_negatives"] == k


def test_pool_draws_are_seeded() -> None:
    z, labels = _pairs(n=16)
    pool, pool_labels = _pairs(n=30, seed=3)

    def loss(seed: int, replace: bool) -> torch.Tensor:
        return pool_hard_contrastive(z[:8], z[8:], labels[:8], pool, pool_labels, "marginal",
                                       beta=1.0, k=20, replace=replace, reduction="none",
                                       generator=torch.Generator().manual_seed(seed))

    for replace in (False, True):
        assert torch.equal(loss(0, replace), loss(0, replace))
        assert not torch.equal(loss(0, replace), loss(1, replace))
    assert not torch.equal(loss(0, False), loss(0, True))


def _distinct_cfg(**loss: Any) -> Any:
    return _cfg(loss=loss, train={"epochs": 2, "batch_size": 64, "steps_per_epoch": 2},
                eval={"every": 0, "geometry": False, "mean_classifier": False,
                      "linear_probe": False, "heldout_loss": False, "final_probes": []})


def test_distinct_negatives_is_stored_every_epoch(data: Any) -> None:
    # k = pool = 64 from 512 samples: k distinct samples without replacement, ~0.63 k with
    distinct = T.train(_distinct_cfg(name="ucl", k=64), data)
    assert [m["distinct_negatives"] for m in distinct.epochs] == [64.0, 64.0]
    iid = T.train(_distinct_cfg(name="nce", k=64, replacement=True), data)
    assert all(35 < m["distinct_negatives"] < 45 for m in iid.epochs)
    # the exact forms: the expected count under their k i.i.d. draws
    exact = T.train(_distinct_cfg(name="ucl", k=64, exact=True), data)
    assert all(35 < m["distinct_negatives"] < 45 for m in exact.epochs)
    # other-class with pool = k: an anchor has ~3/4 k candidates, gets them all (then i.i.d.)
    scl = T.train(_distinct_cfg(name="scl", k=64), data)
    assert all(40 < m["distinct_negatives"] < 64 for m in scl.epochs)
    info = T.train(_distinct_cfg(name="infonce"), data)
    assert [m["distinct_negatives"] for m in info.epochs] == [126.0, 126.0]  # 2B - 2
    # seeded: the same config draws the same negatives (same losses)
    again = T.train(_distinct_cfg(name="ucl", k=64), data)
    assert again.epochs == distinct.epochs


def test_more_distinct_negatives_than_samples_is_refused(data: Any) -> None:
    # refused when the config is parsed (the data set declares its size) ...
    with pytest.raises(ValueError, match=r"loss.k \(600\) exceeds the 512 training samples"):
        _distinct_cfg(name="ucl", k=600)
    # ... and by train() itself, for data whose size only loading tells
    cfg = _distinct_cfg(name="ucl", k=500)
    small = load_dataset("synthetic", seed=0, classes=4, dim=8, n_train=400, n_test=256)
    with pytest.raises(ValueError, match=r"loss.k \(500\) exceeds the 400 training samples"):
        T.train(cfg, small)
    ok = T.train(_distinct_cfg(name="ucl", k=600, replacement=True), data)
    assert ok.status == "done" and ok.epochs[-1]["distinct_negatives"] < 512


@pytest.mark.parametrize(("threads", "want"), [(None, 1), (2, 2)])
def test_a_run_computes_with_its_configured_thread_count(data: Any, threads: int | None,
                                                         want: int) -> None:
    # the worker's or notebook's thread count never leaks into a run: its round-off (and so
    # every metric) would depend on it; the process's count is restored afterwards
    seen: list[int] = []
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        T.train(_cfg(train={"epochs": 1, "threads": threads}), data,
                on_epoch=lambda *_: seen.append(torch.get_num_threads()))
        assert seen == [want] and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    ids = {run_id(_cfg(train={"threads": t})) for t in (None, 1)}
    assert len(ids) == 1  # the default is one thread: the same run
    assert run_id(_cfg(train={"threads": 2})) not in ids
