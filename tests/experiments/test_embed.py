"""``contrastlab embed``: a finished run's split embedded by its final encoder, round-tripped
through ``contrastlab geometry``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from contrastlab.cli import main
from contrastlab.evaluation import geometry_command_output
from contrastlab.experiments import cli_embed, cli_geometry, embed_run, run_config
from contrastlab.experiments.embed import read_provenance
from contrastlab.experiments.records import load_records
from contrastlab.experiments.store import ResultStore
from contrastlab.train import load_data
from contrastlab.train.config import parse_config
from tests.experiments.helpers import TINY_RUN

CONFIG: dict[str, Any] = {
    **TINY_RUN,
    "eval": {"final_lsup": False, "max_test": 100},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("embed")
    rid = run_config(parse_config(CONFIG), out)
    return out, rid


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*")}


def test_embed_then_geometry_reproduces_the_stored_geometry(run: tuple[Path, str],
                                                            tmp_path: Path) -> None:
    out, rid = run
    path = tmp_path / "emb.npz"
    text = cli_embed(out / "runs" / rid, "train", path)
    assert f"embedded the train split of run {rid}: 240 samples, d=3" in text
    assert "samples: all 240 of the train split; the run stored its train-split metrics on all " \
           "of them too (eval.max_train=2000)" in text
    with np.load(path, allow_pickle=False) as data:  # the format `geometry` reads
        assert set(data.files) == {"H_train", "y_train", "provenance"}
        assert data["H_train"].dtype == np.float32 and data["H_train"].shape == (240, 3)
        assert data["y_train"].dtype == np.int64 and data["y_train"].shape == (240,)
        y = data["y_train"]
    assert np.array_equal(y, load_data(parse_config(CONFIG)).y_train.numpy())
    assert read_provenance(path) == {
        "run_id": rid, "split": "train", "n": 240, "dataset": "synthetic", "features": "output",
        "epoch": 2, "eval_n": 240, "eval_cap": 2000}
    # the run evaluated all 240 training samples (240 < eval.max_train): the same numbers
    geo = json.loads(geometry_command_output(str(path), as_json=True))["geometry"]
    stored = load_records(out)[0]
    for key in ("nc1", "etf_distance", "effective_rank", "rankme"):
        assert geo[key] == pytest.approx(stored[key], rel=1e-9, abs=1e-12), key
    shown = cli_geometry(path)
    assert shown.splitlines()[1].startswith(
        f"samples: geometry on all 240 rows of H_train = all 240 samples of the train split of "
        f"run {rid} (data set synthetic, features output, epoch 2)")
    data = json.loads(cli_geometry(path, as_json=True))
    assert data["samples"]["rows"] == 240 and data["samples"]["source"]["run_id"] == rid
    assert {"input", "geometry", "downstream", "notes"} <= set(data)


def test_embed_the_test_split_to_the_default_path(run: tuple[Path, str]) -> None:
    out, rid = run
    rdir = out / "runs" / rid
    path, emb = embed_run(rdir, split="test")
    try:
        assert path == rdir / "embeddings-test.npz"
        assert emb.H.shape == (120, 3) and emb.y.shape == (120,)
        assert emb.provenance["eval_n"] == 100 and emb.provenance["eval_cap"] == 100
        line = cli_geometry(path).splitlines()[1]
        assert "all 120 samples of the test split" in line
        assert "a fixed subset of 100 of them (eval.max_test=100)" in line
    finally:
        path.unlink()


def test_geometry_of_a_foreign_file_says_what_it_is_computed_on(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "h.npz", H_train=rng.standard_normal((40, 3)),
             y_train=np.repeat([0, 1], 20))
    line = cli_geometry(tmp_path / "h.npz").splitlines()[1]
    assert line == ("samples: geometry on all 40 rows of H_train (the file does not say which "
                    "samples they are)")


def _bad(args: list[str], expected: str, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _tree(root)
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert info.value.code == 2, (args, out, err)
    assert out == "" and len(lines) == 1, err
    assert lines[0].startswith("Error: ") and expected in lines[0], (expected, lines[0])
    assert _tree(root) == before, "something was written"


def test_bad_input_is_one_line_exit_2(run: tuple[Path, str], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out, rid = run
    rdir = out / "runs" / rid
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    unfinished = tmp_path / "unfinished"  # a copy of the run at its first epoch
    unfinished.mkdir()
    shutil.copy(rdir / "config.yaml", unfinished / "config.yaml")
    shutil.copy(rdir / "checkpoint.prev.pt", unfinished / "checkpoint.pt")
    nockpt = tmp_path / "nockpt"
    nockpt.mkdir()
    shutil.copy(rdir / "config.yaml", nockpt / "config.yaml")
    for root, args, expected in [
        (tmp_path, ["embed", str(tmp_path / "nope")], "RUN_DIR: no such directory"),
        (tmp_path, ["embed", str(tmp_path / "afile")], "is not a directory"),
        (tmp_path, ["embed", str(tmp_path / "adir")], "is not a run directory (no config.yaml)"),
        (out, ["embed", str(out)], f"is an output directory, not a run directory; pass one of "
                                   f"its runs: {out / 'runs'}/<run_id> ({rid})"),
        (out, ["embed", str(rdir), "--split", "val"],
         "--split must be one of train, test; got 'val'"),
        (out, ["embed", str(rdir), "--out", str(tmp_path / "e.txt")], "--out must end in .npz"),
        (tmp_path, ["embed", str(unfinished)],
         "is not finished: its checkpoint is at epoch 1 of 2"),
        (tmp_path, ["embed", str(nockpt)], "has no checkpoint.pt"),
    ]:
        _bad(args, expected, root, capsys)


def test_the_command_writes_the_file(run: tuple[Path, str], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out, rid = run
    target = tmp_path / "sub" / "e.npz"
    target.parent.mkdir()
    with pytest.raises(SystemExit) as info:
        main(["embed", str(out / "runs" / rid), "--out", str(target)])
    assert info.value.code == 0
    assert f"written to {target}" in capsys.readouterr().out
    assert target.is_file()
    with ResultStore(out, create=False) as store:  # the database is only read
        assert store.status(rid) == "done"
