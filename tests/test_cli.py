"""The command line under bad input and failing work (fault injection, issue 14).

Every bad input of the table below must give exit code 2, exactly one line on stderr that names
the field (or option, or file), nothing on stdout, and nothing written: no output directory, no
database, no file anywhere under the working directory. The commands run in-process through
:func:`contrastlab.cli.main` (what the console script calls), so the table stays fast.
Failing *work* (a run that ends NaN) gives exit code 1 with the run listed last.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from contrastlab.cli import main

TINY = """\
seed: 0
data: {name: synthetic, options: {classes: 3, dim: 4, n_train: 64, n_test: 32}}
model: {encoder: mlp, out_dim: 3, options: {hidden: 8}}
loss: {name: ucl, k: 4}
train: {epochs: 1, batch_size: 32, progress: false}
eval: {every: 0, final_lsup: false, final_knn: false}
output: {dir: runs/from-config}
"""

# (--set overrides, what the one-line error must contain): each is tried with `run` and `sweep`
CONFIG_CASES: list[tuple[list[str], str]] = [
    (["loss.name=foo"], "loss.name must be one of"),
    (["loss.k=0"], "loss.k must be an integer >= 1; got 0"),
    (["loss.k=true"], "loss.k must be an integer; got True"),
    (["loss.k=1.5"], "loss.k must be an integer; got 1.5"),
    (["loss.k=abc"], "loss.k must be an integer; got 'abc'"),
    (["loss.k=null", "loss.name=hucl"], "loss.k is required for 'hucl'"),
    (["loss.beta=-1"], "loss.beta must be >= 0"),
    (["loss.beta=.nan"], "loss.beta must be a finite number"),
    (["loss.beta=true"], "loss.beta must be a number"),
    (["loss.temperature=0"], "loss.temperature must be > 0"),
    (["loss.temperature=-1"], "loss.temperature must be > 0"),
    (["loss.temperature=.inf"], "loss.temperature must be a finite number"),
    (["loss.name=debiased-hard", "loss.tau_plus=1.5"], "loss.tau_plus must lie in [0, 1)"),
    (["loss.normalize=cube"], "loss.normalize must be one of"),
    (["train.device=gpu"], "train.device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"),
    (["train.device=cuda:7"], "train.device 'cuda:7' is not available on this machine"),
    (["train.precision=fp8"], "train.precision must be one of 'fp32', 'bf16', 'fp16'"),
    (["loss.sampler=foo"], "loss.sampler must be one of"),
    (["loss.name=scl", "loss.sampler=uniform"], "loss.sampler must be 'other-class'"),
    (["loss.exact=maybe"], "loss.exact must be one of"),
    (["loss.name=infonce", "loss.exact=true"], "loss.exact applies to scl, hscl, ucl"),
    (["loss.replacement=2"], "loss.replacement must be one of False, True"),
    (["loss.negatives_reduction=max"], "loss.negatives_reduction must be one of"),
    (["loss.score=foo"], "loss.score must be one of"),
    (["loss.pool_size=0"], "loss.pool_size must be an integer >= 1"),
    (["loss.pool_size=2"], "loss.pool_size must be >= loss.k (4)"),
    (["loss.pool_size=1000"], "loss.pool_size (1000) exceeds the 64 training samples"),
    (["loss.k=100"], "loss.k (100) exceeds the 64 training samples"),
    (["loss.kk=1"], "loss.kk is not a field of loss"),
    (["loss=3"], "loss must be a mapping of fields"),
    (["optim.name=lbfgs"], "optim.name must be one of 'adam', 'sgd'"),
    (["optim.lr=0"], "optim.lr must be > 0"),
    (["optim.lr=-1e-3"], "optim.lr must be > 0"),
    (["optim.lr=true"], "optim.lr must be a number"),
    (["optim.lr=fast"], "optim.lr must be a number"),
    (["optim.weight_decay=-1"], "optim.weight_decay must be >= 0"),
    (["optim.schedule=step"], "optim.schedule must be one of"),
    (["optim.warmup_epochs=-1"], "optim.warmup_epochs must be >= 0"),
    (["optim.min_lr=-1"], "optim.min_lr must be >= 0"),
    (["optim.momentum=true"], "optim.momentum must be a number"),
    (["optim.nesterov=1"], "optim.nesterov must be true or false"),
    (["optim.foo=1"], "optim.foo is not a field of optim"),
    (["train.epochs=0"], "train.epochs must be an integer >= 1"),
    (["train.epochs=many"], "train.epochs must be an integer"),
    (["train.epochs=2.5"], "train.epochs must be an integer"),
    (["train.batch_size=0"], "train.batch_size must be an integer >= 1"),
    (["train.batch_size=100000"], "train.batch_size (100000) exceeds the 64 training samples"),
    (["train.steps_per_epoch=0"], "train.steps_per_epoch must be an integer >= 1"),
    (["train.grad_clip=0"], "train.grad_clip must be > 0"),
    (["train.progress=1"], "train.progress must be true or false"),
    (["train.threads=0"], "train.threads must be an integer >= 1"),
    (["train.deterministic=maybe"], "train.deterministic must be true or false"),
    (["train.checkpoint=2"], "train.checkpoint must be true or false"),
    (["train.max_memory_gb=0"], "train.max_memory_gb must be > 0"),
    (["train.max_memory_gb=1e-9"], "above train.max_memory_gb"),
    (["train.foo=1"], "train.foo is not a field of train"),
    (["eval.every=-1"], "eval.every must be an integer >= 0"),
    (["eval.features=mid"], "eval.features must be one of"),
    (["eval.max_train=0"], "eval.max_train must be an integer >= 1"),
    (["eval.final_probes=[foo]"], "eval.final_probes must be one of"),
    (["eval.final_probes=bias"], "eval.final_probes must be a list"),
    (["eval.probe_weight_decay=-1"], "eval.probe_weight_decay must be >= 0"),
    (["eval.batch_size=0"], "eval.batch_size must be an integer >= 1"),
    (["eval.geometry=2"], "eval.geometry must be true or false"),
    (["eval.foo=1"], "eval.foo is not a field of eval"),
    (["output.keep_checkpoints=3"], "output.keep_checkpoints must be true or false"),
    (["output.dir=/dev/null/x"], "output.dir: '/dev/null/x' cannot be created"),
    (["data.name=imagenet"], "data.name must be one of"),
    (["data.name=3"], "data.name must be a string"),
    (["data.pairs=views"], "data.pairs must be one of"),
    (["data.seed=-1"], "data.seed must be an integer >= 0"),
    (["data.shuffle_labels=3"], "data.shuffle_labels must be true or false"),
    (["data.root=/tmp"], "data.root: data set 'synthetic' takes no root"),
    (["data.augment.foo=1"], "data.augment.foo is not an option of the augmenter"),
    (["data.augment.strength=-1"], "data.augment.strength must be a number >= 0"),
    (["data.augment.strength=true"], "data.augment.strength must be a number"),
    (["data.foo=1"], "data.foo is not a field of data"),
    (["data.options.foo=1"], "data.options.foo is not an option of data set 'synthetic'"),
    (["data.options.classes=1"], "data.options.classes must be an integer >= 2; got 1"),
    (["data.options.classes=true"], "data.options.classes must be an integer; got True"),
    (["data.options.dim=-2"], "data.options.dim must be an integer >= 1; got -2"),
    (["data.options.dim=abc"], "data.options.dim must be an integer; got 'abc'"),
    (["data.options.n_train=0"], "data.options.n_train must be an integer >= 1; got 0"),
    (["data.options.n_test=0"], "data.options.n_test must be an integer >= 1; got 0"),
    (["data.options.per_class=5"], "data.options.per_class: give either per_class or n_train"),
    (["data.options.prior=zipf:x"], "data.options.prior must be 'balanced'"),
    (["data.options.prior=[0.5,0.5]"], "data.options.prior must have length 3"),
    (["data.options.prior=[1,-1,1]"], "data.options.prior"),
    (["data.options.prior=3"], "data.options.prior"),
    (["data.options.std=-1"], "data.options.std must be a number > 0"),
    (["data.options.std=.inf"], "data.options.std must be a finite number"),
    (["data.options.separation=0"], "data.options.separation must be a number > 0"),
    (["data.options.margin=1"], "data.options.margin must be a number < 1"),
    (["data.options.margin=0"], "data.options.margin must be a number > 0"),
    (["data.options.sphere=1"], "data.options.sphere must be true or false"),
    (["data.options.disjoint=2"], "data.options.disjoint must be true or false"),
    (["data.options.sphere=true", "data.options.dim=1"], "data.options.dim must be >= 2 with"),
    (["data.options=3"], "data.options"),
    (["data.name=cifar10", "data.options={}"], "data.root is required for 'cifar10'"),
    (["data.name=cifar10", "data.root=/no/such/dir"], "data.root: no folder cifar-10-batches-py"),
    (["data.name=cifar100", "data.root=/no/such/dir"], "data.root: no folder cifar-100-python"),
    (["data.name=fashion-mnist", "data.root=/no/such/dir"], "data.root: no such directory"),
    (["data.name=mnist1d", "data.options={}", "data.root=/tmp"],
     "data.root: data set 'mnist1d' takes no root"),
    (["data.name=mnist1d", "data.options={num_samples: 5}"],
     "data.options.num_samples must be an integer >= 10"),
    (["data.name=mnist1d"], "data.options.classes is not an option of data set 'mnist1d'"),
    (["data.name=digits", "data.options={test_fraction: 1.5}"],
     "data.options.test_fraction must be a number < 1"),
    (["data.name=synthetic-circle", "data.options={per_class: 1}"],
     "data.options.per_class must be an integer >= 2"),
    (["data.name=rotten-tomatoes", "data.options={max_samples: 1}"],
     "data.options.max_samples must be an integer >= 2"),
    (["data.name=rotten-tomatoes", "data.options={model: bert}"],
     "data.options.model is not an option of data set 'rotten-tomatoes'"),
    (["model.encoder=vit"], "model.encoder must be one of"),
    (["model.out_dim=0"], "model.out_dim must be an integer >= 1"),
    (["model.head=big"], "model.head must be one of"),
    (["model.head_dim=4"], "model.head_dim needs a projection head"),
    (["model.head_hidden=0"], "model.head_hidden must be an integer >= 1"),
    (["model.options.foo=1"], "model.options.foo is not an option of encoder 'mlp'"),
    (["model.options.hidden=-3"], "model.options.hidden must be an integer >= 1; got -3"),
    (["model.options.depth=abc"], "model.options.depth must be an integer; got 'abc'"),
    (["model.options.depth=-1"], "model.options.depth must be an integer >= 0"),
    (["model.options.batch_norm=1"], "model.options.batch_norm must be true or false"),
    (["model.options.bias_last=maybe"], "model.options.bias_last must be true or false"),
    (["model.encoder=cnn1d", "model.options={hidden: 3}"],
     "model.options.hidden is not an option of encoder 'cnn1d'; allowed: width"),
    (["model.encoder=linear", "model.options={bias: 0}"], "model.options.bias must be true or"),
    (["model.options=3"], "model.options must be a mapping"),
    (["seed=-1"], "seed must be an integer >= 0"),
    (["seed=true"], "seed must be an integer; got True"),
    (["foo=1"], "foo is not a field of the config"),
    (["foo"], "--set expects KEY=VALUE"),
    ([".a=1"], "--set expects a dotted key"),
    (["loss.k=[1"], "--set loss.k: value '[1' is not valid YAML"),
    (["loss.k.x=1"], "loss.k is not a section"),
]

SWEEP_ONLY: list[tuple[list[str], str]] = [
    (["sweep.loss.k=[]"], "must list at least one value"),
    (["sweep.loss.k=[4, 0]"], "loss.k must be an integer >= 1; got 0 (sweep point loss.k=0)"),
    (["sweep.output.dir=[a]"], "cannot be swept"),
    (["sweep.loss.name=[ucl, nope]"], "loss.name must be one of"),
    (["sweep.train.batch_size=[32, 1000]"], "train.batch_size (1000) exceeds the 64"),
]

# config files that cannot be read: (file name, bytes, expected fragment)
FILE_CASES: list[tuple[str, bytes | None, str]] = [
    ("missing.yaml", None, "config file not found: 'missing.yaml'"),
    ("dup.yaml", b"loss:\n  k: 1\n  k: 64\n", "duplicate key 'k' (first at line 2)"),
    ("dupsec.yaml", b"loss: {k: 1}\nloss: {k: 2}\n", "duplicate key 'loss'"),
    ("binary.yaml", bytes(range(128, 256)) * 4, "not a UTF-8 text file"),
    ("nul.yaml", b"seed: 0\x00\x00", "a binary file"),
    ("bad.yaml", b"loss: {k: 1\n", "invalid YAML"),
    ("list.yaml", b"- 1\n- 2\n", "must be a mapping of sections; got list"),
    ("scalar.yaml", b"hello\n", "must be a mapping of sections; got str"),
    ("section.yaml", b"losses: {k: 1}\n", "losses is not a field of the config"),
    ("tab.yaml", b"loss:\n\tk: 1\n", "invalid YAML"),
]

# other commands: (args, expected fragment); {tmp} is the working directory
OTHER_CASES: list[tuple[list[str], str]] = [
    (["run", "{cfg}", "--out", "/dev/null/x"], "--out: '/dev/null/x' cannot be created"),
    (["run", "{cfg}", "--out", "{tmp}/afile"], "--out: '{tmp}/afile' exists and is not a"),
    (["sweep", "{cfg}", "--out", "/dev/null/x"], "--out: '/dev/null/x' cannot be created"),
    (["run", "{tmp}/adir"], "is a directory, not a YAML file"),
    (["run"], "Missing argument"),
    (["run", "{cfg}", "--bogus"], "No such option: --bogus"),
    (["sweep", "{cfg}", "--workers", "0"], "--workers"),
    (["sweep", "{cfg}", "--executor", "spark"], "--executor must be one of"),
    (["sweep", "{cfg}", "--address", "auto"], "--address needs --executor ray"),
    (["sweep", "{cfg}", "--cpus-per-run", "2"], "--cpus-per-run needs --executor ray"),
    (["sweep", "{cfg}", "--executor", "ray", "--workers", "2"], "--workers applies to"),
    (["sweep", "{cfg}", "--executor", "ray", "--cpus-per-run", "0"], "cpus-per-run"),
    (["sweep", "{cfg}", "--executor", "ray", "--retries", "-1"], "retries"),
    (["nosuchcommand"], "No such command 'nosuchcommand'"),
    (["results", "{tmp}/nonexist"], "no results database in"),
    (["results", "{tmp}/adir", "--export", "{tmp}/out.txt"], "--export must end in"),
    (["report", "{tmp}/nonexist"], "is not a results directory"),
    (["geometry", "{tmp}/nonexist.npz"], "path: no such file"),
    (["geometry", "{tmp}/adir"], "is a directory; an .npz file is expected"),
    (["geometry", "{tmp}/e.npy"], "is a single .npy array, not an .npz archive"),
    (["geometry", "{tmp}/garbage.npz"], "path: cannot read"),
    (["geometry", "{tmp}/noh.npz"], "has no array 'H_train'"),
    (["geometry", "{tmp}/one.npz"], "the labels hold a single class"),
    (["geometry", "{tmp}/float.npz"], "y_train must be a 1-D integer array"),
    (["geometry", "{tmp}/absurd.npz"], "distinct labels for 20 training samples"),
    (["geometry", "{tmp}/huge.npz", "--num-classes", "2"], "outside 0..1 (--num-classes 2)"),
    (["geometry", "{tmp}/huge.npz", "--num-classes", "1"], "--num-classes must be an integer"),
    (["geometry", "{tmp}/half.npz"], "must hold both H_test and y_test"),
    (["repro", "nosuch"], "recipe must be one of"),
    (["repro"], "name is required"),
    (["repro", "awasthi-lemma1", "--profile", "medium"], "profile"),
    (["repro", "awasthi-lemma1", "--workers", "0"], "--workers"),
    (["repro", "awasthi-lemma1", "--param", "ks"], "--param must be KEY=VALUE"),
    (["repro", "awasthi-lemma1", "--out", "/dev/null/x"], "--out: '/dev/null/x' cannot be"),
    (["repro", "{tmp}/evil.yaml"], "name must match [a-z0-9][a-z0-9-]*"),
    (["repro", "{tmp}/nonexist.yaml"], "does not exist"),
    (["repro", "--summary", "--out", "{tmp}/adir"], "no recipe results"),
    (["repro", "--summary", "--out", "{tmp}/adir", "--to", "{tmp}/x.txt"], "--to must end in"),
    (["bounds", "--classes", "1"], "--classes must be an integer >= 2"),
    (["bounds", "--classes", "3", "--k", "0"], "--k must be comma-separated integers"),
    (["bounds", "--classes", "3", "--k", "1,1000000000"], "--k must be at most 67108864"),
    (["bounds", "--classes", "3", "--b", "-1"], "--b must be a finite number > 0"),
    (["bounds", "--classes", "3", "--harmonic", "foo"], "--harmonic must be"),
    (["bounds", "--classes", "3", "--plot", "{tmp}/x.txt"], "--plot must name a .png"),
    (["bounds", "--classes", "3", "--plot", "/dev/null/x.png"], "--plot: '/dev/null/x.png'"),
    (["optimum", "--classes", "1"], "classes"),
    (["optimum", "--classes", "3", "--loss", "foo"], "loss"),
    (["optimum", "--classes", "3", "--temperature", "0"], "temperature"),
    (["optimum", "--classes", "3", "--k", "abc"], "k"),
    (["optimum", "--classes", "3", "--prior", "zipf:x"], "prior"),
    (["conjecture", "--classes", "1"], "classes"),
    (["demo", "--out", "/dev/null/x"], "--out: '/dev/null/x' cannot be created"),
    (["demo", "--steps", "0"], "--steps"),
]


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*")}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory holding the inputs of every case."""
    (tmp_path / "cfg.yaml").write_text(TINY)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    np.save(tmp_path / "e.npy", np.zeros((4, 2)))
    (tmp_path / "garbage.npz").write_bytes(b"PK\x03\x04 not really a zip")
    h = np.random.default_rng(0).standard_normal((20, 3))
    np.savez(tmp_path / "noh.npz", y_train=np.zeros(20, dtype=np.int64))
    np.savez(tmp_path / "one.npz", H_train=h, y_train=np.zeros(20, dtype=np.int64))
    np.savez(tmp_path / "float.npz", H_train=h, y_train=np.zeros(20))
    np.savez(tmp_path / "absurd.npz", H_train=h, y_train=np.arange(20))
    np.savez(tmp_path / "huge.npz", H_train=h, y_train=np.repeat([0, 10**9], 10))
    np.savez(tmp_path / "half.npz", H_train=h, y_train=np.repeat([0, 1], 10), H_test=h)
    (tmp_path / "evil.yaml").write_text((Path(__file__).parents[1] / "recipes" /
                                         "awasthi-lemma1.yaml").read_text().replace(
        "name: awasthi-lemma1", "name: ../../escaped"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    yield tmp_path


def _invoke(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def _assert_bad_input(args: list[str], expected: str, root: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    before = _tree(root)
    code, out, err = _invoke(args, capsys)
    lines = err.strip().splitlines()
    assert code == 2, (args, code, out, err)
    assert out == "", out
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: ") and expected in lines[0], (expected, lines[0])
    assert _tree(root) == before, "something was written"


def _config_cases() -> Iterator[Any]:
    for command in ("run", "sweep"):
        for sets, expected in CONFIG_CASES:
            yield pytest.param(command, sets, expected, id=f"{command}:{'|'.join(sets)}")
    for sets, expected in SWEEP_ONLY:
        yield pytest.param("sweep", sets, expected, id=f"sweep:{'|'.join(sets)}")


@pytest.mark.parametrize(("command", "sets", "expected"), list(_config_cases()))
def test_a_bad_config_fails_before_any_work(command: str, sets: list[str], expected: str,
                                            workdir: Path, capsys: Any) -> None:
    args = [command, "cfg.yaml", *(a for s in sets for a in ("--set", s))]
    if command == "sweep" and not any(s.startswith("sweep.") for s in sets):
        args += ["--set", "sweep={seed: [0, 1]}"]
    _assert_bad_input(args, expected, workdir, capsys)


@pytest.mark.parametrize(("command", "name", "content", "expected"), [
    pytest.param(c, n, b, e, id=f"{c}:{n}") for c in ("run", "sweep") for n, b, e in FILE_CASES])
def test_an_unreadable_config_file_is_named(command: str, name: str, content: bytes | None,
                                            expected: str, workdir: Path, capsys: Any) -> None:
    if content is not None:
        (workdir / name).write_bytes(content)
    _assert_bad_input([command, name], expected, workdir, capsys)


@pytest.mark.parametrize(("args", "expected"), [
    pytest.param(a, e, id=" ".join(a)) for a, e in OTHER_CASES])
def test_bad_command_input_is_one_line(args: list[str], expected: str, workdir: Path,
                                       capsys: Any) -> None:
    tmp = str(workdir)
    args = [a.replace("{tmp}", tmp).replace("{cfg}", "cfg.yaml") for a in args]
    _assert_bad_input(args, expected.replace("{tmp}", tmp), workdir, capsys)


def test_the_table_has_at_least_150_cases() -> None:
    n = 2 * len(CONFIG_CASES) + len(SWEEP_ONLY) + 2 * len(FILE_CASES) + len(OTHER_CASES)
    assert n >= 150, n


# --------------------------------------------------------------------------------------------
# failing work: exit code 1, the failed runs last
# --------------------------------------------------------------------------------------------

NAN = ["--set", "optim.lr=1e30", "--set", "loss.temperature=1e-6"]


def test_run_exit_codes(workdir: Path, capsys: Any) -> None:
    code, out, _ = _invoke(["run", "cfg.yaml", "--out", "ok"], capsys)
    assert code == 0 and "done" in out
    code, out, _ = _invoke(["run", "cfg.yaml", "--out", "bad", *NAN], capsys)
    lines = out.strip().splitlines()
    assert code == 1
    assert lines[-2] == "run did not finish:"
    assert " nan: non-finite embeddings" in lines[-1] and "at epoch 1, step" in lines[-1]


def test_sweep_exit_code_lists_the_failed_runs_last(workdir: Path, capsys: Any) -> None:
    # two points: a good learning rate and one that diverges
    args = ["sweep", "cfg.yaml", "--out", "sw", "--set", "loss.temperature=1e-6",
            "--set", "sweep={optim.lr: [0.001, 1.0e30]}"]
    code, out, _ = _invoke(args, capsys)
    lines = out.strip().splitlines()
    assert code == 1, out
    assert lines[-2] == "1 of 2 runs did not finish:", out
    assert " nan: non-finite" in lines[-1], out
    summary = (workdir / "sw" / "summary.md").read_text().splitlines()
    assert summary[0] == "# Sweep of 2 runs"  # a Markdown document: a table and the failures
    assert any(line.startswith("| optim.lr | n |") for line in summary)
    assert summary[-2] == "- 1 of 2 runs did not finish:" and "nan: non-finite" in summary[-1]
    code, out, _ = _invoke(["sweep", "cfg.yaml", "--out", "sw2",
                            "--set", "sweep={seed: [0, 1]}"], capsys)
    assert code == 0, out


def test_no_traceback_for_an_os_error_during_work(workdir: Path, capsys: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import contrastlab.experiments as ex

    def full_disk(*_a: Any, **_k: Any) -> Any:
        raise OSError(28, "No space left on device", "runs/x/results.sqlite")

    monkeypatch.setattr(ex, "cli_run", full_disk)
    code, out, err = _invoke(["run", "cfg.yaml"], capsys)
    assert code == 1 and out == ""
    assert err.strip() == "Error: No space left on device: runs/x/results.sqlite"



class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("argv", [["repro", "awasthi-lemma1"], ["--help"], ["version"],
                                  ["run", "--help"], ["optimum", "--classes", "3"]])
def test_long_commands_announce_themselves_at_a_terminal_only(argv: list[str]) -> None:
    from contrastlab.cli import LONG_COMMANDS, announce

    tty, pipe = _Tty(), io.StringIO()
    long_ = argv[0] in LONG_COMMANDS and "--help" not in argv
    assert announce(argv, tty) is long_
    assert tty.getvalue() == (f"contrastlab {argv[0]}: starting (loading torch)\n"
                              if long_ else "")
    assert announce(argv, pipe) is False and pipe.getvalue() == ""


def test_the_announcement_comes_before_the_imports_under_a_pseudo_terminal(
    tmp_path: Path,
) -> None:
    """At a real (pseudo) terminal the first line is the announcement, then the command's own
    bad-input line."""
    import os
    import pty
    import subprocess
    import sys

    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "contrastlab", "repro", "nosuch"],
                            stdout=secondary, stderr=secondary, cwd=tmp_path)
    os.close(secondary)
    data = _read_terminal(primary)
    assert proc.wait(timeout=300) == 2
    os.close(primary)
    lines = data.decode().replace("\r", "").strip().splitlines()
    assert lines[0] == "contrastlab repro: starting (loading torch)"
    assert lines[1].startswith("Error: recipe must be one of") and len(lines) == 2


def _read_terminal(primary: int) -> bytes:
    """Everything written to a pseudo terminal until the process behind it closes it."""
    import os

    data = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize("argv", [
    ["optimum", "--classes", "3", "--k", "1,2", "--restarts", "1", "--json"],
    ["bounds", "--classes", "5", "--k", "1,64,4096", "--json"],
])
def test_progress_bars_stay_out_of_pipes_and_json(argv: list[str],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """optimum and bounds draw their bar only at a terminal: under a capture (a pipe) stderr is
    empty and stdout is the JSON alone."""
    code, out, err = _invoke(argv, capsys)
    assert code == 0 and err == ""
    assert json.loads(out)["rows"]


def test_optimum_draws_a_bar_at_a_pseudo_terminal_only_on_stderr(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]
                                                                ) -> None:
    """At a real (pseudo) terminal on stderr, ``optimum`` draws a bar over its k values with the
    k being solved; stdout (a pipe) holds exactly what it holds without a terminal."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    argv = ["optimum", "--classes", "3", "--k", "1,2", "--restarts", "1", "--json"]
    primary, secondary = pty.openpty()
    # a terminal of 24 x 100 (a fresh pseudo terminal has 0 columns: tqdm would draw nothing)
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "contrastlab", *argv],
                            stdout=subprocess.PIPE, stderr=secondary, cwd=tmp_path,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    os.close(secondary)
    data = _read_terminal(primary)
    stdout, _ = proc.communicate(timeout=300)
    os.close(primary)
    assert proc.returncode == 0
    err = data.decode()
    assert err.startswith("contrastlab optimum: starting (loading torch)")
    assert "optima" in err and "2/2" in err and "k=2" in err
    code, out, piped_err = _invoke(argv, capsys)
    assert code == 0 and piped_err == "" and stdout.decode() == out
