"""Tiled kernel benchmark: contrastlab's tiled losses against dense PyTorch and peer libraries.

For each configuration it measures

- **time**: forward + backward, median of ``--repeats`` runs after warm-up, the implementations
  interleaved round-robin in one process (the machine is shared and noisy: only ratios taken
  together mean much);
- **peak extra memory**: in a fresh subprocess per (configuration, implementation): one warm-up
  step at the same shape (so torch.compile's compilation is not counted), then the resident set
  (``VmRSS``) is sampled every 0.5 ms by a thread during a second step; the peak minus the RSS
  before the step is reported. glibc is told to map every allocation >= 64 KiB
  (``MALLOC_MMAP_THRESHOLD_``) so that freed memory leaves the RSS and reused heap memory does
  not hide a step's allocations;
- **the matrix-product floor**: the products the loss has to do, in reused output buffers: for
  N rows the three N x N x d products (S = Z Z^T, S Z and S^T Z), for explicit k the three
  B x k x d products (S = A N^T, S N, S^T A). The tiled self-similarity kernel does only 2 N^2 d
  multiply-adds (symmetric strips), so it can run below this floor.

Implementations: ``contrastlab`` (the tiled kernel, ``tiled=True``), ``contrastlab-rows``
(NT-Xent only: the same kernel with full row blocks and 3 products instead of symmetric strips),
``plain`` (the textbook dense
formula), ``compiled`` (``torch.compile(plain)``), ``lightly`` (``lightly.loss.NTXentLoss``),
``pml`` (``pytorch_metric_learning.losses.NTXentLoss`` / ``SupConLoss``), ``supcontrast`` (the
SupConLoss formula published with Khosla et al. 2020, written here from the paper and the
description of the authors' code: dense float masks, max subtraction, base temperature = t).
Every implementation's loss value is checked against contrastlab's (relative 1e-4).

Configurations that cannot fit are skipped with a recorded reason: the memory of each
implementation is estimated first (e.g. pml's NTXentLoss builds an N^3 pair mask) against
``--mem-budget-gb``.

N counts the rows of the similarity matrix: the in-batch losses take two views of B = N / 2
samples (``hscl``: one view of N samples in 10 classes, HSCL with the plug-in negative term
``exact="mean"``, beta = 1, on the sphere; ``dense`` is contrastlab's own dense path and
``plain`` / ``compiled`` the textbook formula). Explicit k: B = 256 anchors and a pool of k
negatives shared by the anchors (``nce``), or k negatives per anchor drawn by index from a memory
bank of M = 65536 rows (``nce-idx``; ``plain`` gathers the (B, k, d) tensor).

Usage::

    python benchmarks/bench_kernel.py --quick            # about two minutes
    python benchmarks/bench_kernel.py                    # the full grid (long; see --only)
    python benchmarks/bench_kernel.py --only ntxent --n 4096 16384 --d 128

Writes ``--json`` (all records) and ``--out`` (markdown tables of times, memory and ratios
contrastlab / peer and contrastlab / floor).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import contrastlab.losses as L

sys.path.insert(0, str(Path(__file__).resolve().parent))
from contrastlab.losses.kernels import engine as tiled_module
from contrastlab.losses.kernels import jiang as jiang_module
from peers import plain_hscl_mean, plain_nce_indexed, plain_ntxent, published_hard

TEMPERATURE = 0.1
NCE_BATCH = 256
N_CLASSES = 10
LOSS_KINDS = ("ntxent", "supcon", "debiased", "hscl", "nce", "nce-idx")
IN_BATCH_N = (256, 1024, 4096, 16384, 65536)
#: per-anchor negatives (``nce-idx``) are drawn from a memory bank of this many rows
POOL_SIZE = 65536
HSCL_BETA = 1.0
DIMS = (128, 2048)
NCE_K = (1, 16, 256, 4096, 65536)

Fn = Callable[[dict[str, torch.Tensor]], torch.Tensor | None]


@dataclass(frozen=True)
class Case:
    kind: str  # ntxent | supcon | debiased | hscl | nce | nce-idx
    n: int  # rows (in-batch) or k (nce)
    d: int

    @property
    def title(self) -> str:
        if self.kind == "nce":
            return f"nce B={NCE_BATCH} k={self.n} d={self.d}"
        if self.kind == "nce-idx":
            return f"nce-idx B={NCE_BATCH} k={self.n} M={POOL_SIZE} d={self.d}"
        return f"{self.kind} N={self.n} d={self.d}"


# ----------------------------------------------------------------------------- references
def supcontrast_loss(
    z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor, t: float, base_t: float
) -> torch.Tensor:
    """The SupConLoss formula of Khosla et al. (2020) as their published code computes it
    (written from the paper's eq. (2) and the code's description, not copied): features of shape
    (B, views, d) flattened view-major, a dense float label mask, logits with the row max
    subtracted, the self-contrast removed by a float mask, the loss scaled by t / base_t."""
    features = torch.stack([F.normalize(z1, dim=1), F.normalize(z2, dim=1)], dim=1)
    batch, views = features.shape[0], features.shape[1]
    lab = labels.view(-1, 1)
    mask = torch.eq(lab, lab.T).float()
    contrast = torch.cat(torch.unbind(features, dim=1), dim=0)  # (views B, d), view-major
    anchor_dot_contrast = torch.matmul(contrast, contrast.T) / t
    logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
    logits = anchor_dot_contrast - logits_max.detach()
    mask = mask.repeat(views, views)
    logits_mask = torch.ones_like(mask)
    logits_mask[torch.arange(batch * views), torch.arange(batch * views)] = 0.0
    mask = mask * logits_mask
    exp_logits = torch.exp(logits) * logits_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
    loss = -(t / base_t) * mean_log_prob_pos
    return loss.view(views, batch).mean()


def plain_nce_shared(a: torch.Tensor, p: torch.Tensor, n: torch.Tensor, t: float) -> torch.Tensor:
    """Dense InfoNCE with a shared pool: cat([a.p, a N^T]) / t + cross-entropy."""
    a, p, n = F.normalize(a, dim=1), F.normalize(p, dim=1), F.normalize(n, dim=1)
    logits = torch.cat([(a * p).sum(1, keepdim=True), a @ n.T], dim=1) / t
    return F.cross_entropy(logits, torch.zeros(a.shape[0], dtype=torch.long))


# ----------------------------------------------------------------------------- the floor
class Floor:
    """The three products of a loss into reused buffers: S = Q K^T, S K and S^T Q (the buffers
    are allocated on the first call)."""

    def __init__(self, rows: int, cols: int, d: int) -> None:
        self.shape = (rows, cols, d)
        self.bufs: tuple[torch.Tensor, ...] | None = None

    def _buffers(self) -> tuple[torch.Tensor, ...]:
        if self.bufs is None:
            rows, cols, d = self.shape
            g = torch.Generator().manual_seed(99)
            q = torch.randn(rows, d, generator=g)
            k = q if rows == cols else torch.randn(cols, d, generator=g)
            s = torch.empty(rows, cols)
            self.bufs = (q, k, s, torch.empty(rows, d), torch.empty(cols, d))
        return self.bufs

    def __call__(self, _inputs: dict[str, torch.Tensor]) -> None:
        q, k, s, dq, dk = self._buffers()
        torch.mm(q, k.T, out=s)
        torch.mm(s, k, out=dq)
        torch.mm(s.T, q, out=dk)

    def first_product(self) -> None:
        q, k, s, _, _ = self._buffers()
        torch.mm(q, k.T, out=s)


# ----------------------------------------------------------------------------- cases
def make_inputs(case: Case, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if case.kind == "nce":
        return {
            "a": torch.randn(NCE_BATCH, case.d, generator=g).requires_grad_(True),
            "p": torch.randn(NCE_BATCH, case.d, generator=g).requires_grad_(True),
            "n": torch.randn(case.n, case.d, generator=g).requires_grad_(True),
        }
    if case.kind == "nce-idx":
        return {
            "a": torch.randn(NCE_BATCH, case.d, generator=g).requires_grad_(True),
            "p": torch.randn(NCE_BATCH, case.d, generator=g).requires_grad_(True),
            "n": torch.randn(POOL_SIZE, case.d, generator=g).requires_grad_(True),
            "idx": torch.randint(0, POOL_SIZE, (NCE_BATCH, case.n), generator=g),
        }
    if case.kind == "hscl":  # one view of N samples, 10 classes
        return {
            "z": torch.randn(case.n, case.d, generator=g).requires_grad_(True),
            "y": torch.arange(case.n) % N_CLASSES,
        }
    b = case.n // 2
    return {
        "z1": torch.randn(b, case.d, generator=g).requires_grad_(True),
        "z2": torch.randn(b, case.d, generator=g).requires_grad_(True),
        "y": torch.arange(b) % N_CLASSES,
    }


def _peers() -> tuple[Any, Any]:
    try:
        from lightly.loss import NTXentLoss as lightly_ntxent
    except ImportError:  # pragma: no cover - optional peer
        lightly_ntxent = None
    try:
        from pytorch_metric_learning import losses as pml
    except ImportError:  # pragma: no cover - optional peer
        pml = None
    return lightly_ntxent, pml


def implementations(case: Case, with_compile: bool = True) -> dict[str, Fn]:
    """name -> f(inputs) returning the loss (None for the floor)."""
    t = TEMPERATURE
    lightly_ntxent, pml = _peers()
    out: dict[str, Fn] = {}
    if case.kind == "ntxent":
        out["contrastlab"] = lambda x: L.info_nce(x["z1"], x["z2"], t, tiled=True)

        def rows_variant(x: dict[str, torch.Tensor]) -> torch.Tensor:
            # the same kernel with full row blocks (3 products) instead of symmetric strips
            tiled_module.SELF_SIMILARITY_METHOD = "rows"
            try:
                return L.info_nce(x["z1"], x["z2"], t, tiled=True)
            finally:
                tiled_module.SELF_SIMILARITY_METHOD = "symmetric"

        out["contrastlab-rows"] = rows_variant
        out["plain"] = lambda x: plain_ntxent(x["z1"], x["z2"], t)
        if with_compile:
            comp = torch.compile(plain_ntxent, dynamic=False)
            out["compiled"] = lambda x: comp(x["z1"], x["z2"], t)
        if lightly_ntxent is not None:
            lk = lightly_ntxent(temperature=t)
            out["lightly"] = lambda x: lk(x["z1"], x["z2"])
        if pml is not None:
            pk = pml.NTXentLoss(temperature=t)

            def pml_ntxent(x: dict[str, torch.Tensor]) -> torch.Tensor:
                b = x["z1"].shape[0]
                lab = torch.cat([torch.arange(b), torch.arange(b)])
                return pk(torch.cat([x["z1"], x["z2"]]), lab)

            out["pml"] = pml_ntxent
        out["floor"] = Floor(case.n, case.n, case.d)
    elif case.kind == "supcon":
        out["contrastlab"] = lambda x: L.supcon(x["z1"], x["z2"], x["y"], t, tiled=True)
        out["supcontrast"] = lambda x: supcontrast_loss(x["z1"], x["z2"], x["y"], t, t)
        if with_compile:
            comp2 = torch.compile(supcontrast_loss, dynamic=False)
            out["compiled"] = lambda x: comp2(x["z1"], x["z2"], x["y"], t, t)
        if pml is not None:
            pk2 = pml.SupConLoss(temperature=t)
            out["pml"] = lambda x: pk2(torch.cat([x["z1"], x["z2"]]), torch.cat([x["y"], x["y"]]))
        out["floor"] = Floor(case.n, case.n, case.d)
    elif case.kind == "debiased":
        out["contrastlab"] = lambda x: L.debiased_hard(x["z1"], x["z2"], 0.5, 0.1, 1.0, tiled=True)
        out["plain"] = lambda x: published_hard(x["z1"], x["z2"], 0.5, 0.1, 1.0)
        if with_compile:
            comp3 = torch.compile(published_hard, dynamic=False)
            out["compiled"] = lambda x: comp3(x["z1"], x["z2"], 0.5, 0.1, 1.0)
        out["floor"] = Floor(case.n, case.n, case.d)
    elif case.kind == "hscl":
        beta = HSCL_BETA
        out["contrastlab"] = lambda x: L.hscl(
            x["z"], x["y"], beta, temperature=t, normalize="sphere", exact="mean", tiled=True
        )

        def hscl_rows(x: dict[str, torch.Tensor]) -> torch.Tensor:
            # the row-block plug-in kernel (3 products) instead of the symmetric strips
            jiang_module.PLUG_IN_METHOD = "rows"
            try:
                return L.hscl(
                    x["z"], x["y"], beta, temperature=t, normalize="sphere", exact="mean",
                    tiled=True,
                )
            finally:
                jiang_module.PLUG_IN_METHOD = "symmetric"

        out["contrastlab-rows"] = hscl_rows
        out["dense"] = lambda x: L.hscl(
            x["z"], x["y"], beta, temperature=t, normalize="sphere", exact="mean", tiled=False
        )
        out["plain"] = lambda x: plain_hscl_mean(x["z"], x["y"], beta, t)
        if with_compile:
            comp5 = torch.compile(plain_hscl_mean, dynamic=False)
            out["compiled"] = lambda x: comp5(x["z"], x["y"], beta, t)
        out["floor"] = Floor(case.n, case.n, case.d)
    elif case.kind == "nce-idx":
        out["contrastlab"] = lambda x: L.nce_loss(
            x["a"], x["p"], x["n"], temperature=t, normalize="sphere", tiled=True,
            negative_index=x["idx"],
        )
        out["plain"] = lambda x: plain_nce_indexed(x["a"], x["p"], x["n"], x["idx"], t)
        if with_compile:
            comp6 = torch.compile(plain_nce_indexed, dynamic=False)
            out["compiled"] = lambda x: comp6(x["a"], x["p"], x["n"], x["idx"], t)
        out["floor"] = Floor(NCE_BATCH, case.n, case.d)
        # the products of scoring the whole bank (what the kernel does when k is not << M)
        out["floor-bank"] = Floor(NCE_BATCH, POOL_SIZE, case.d)
    else:
        out["contrastlab"] = lambda x: L.nce_loss(
            x["a"], x["p"], x["n"], temperature=t, normalize="sphere", tiled=True
        )
        out["plain"] = lambda x: plain_nce_shared(x["a"], x["p"], x["n"], t)
        if with_compile:
            comp4 = torch.compile(plain_nce_shared, dynamic=False)
            out["compiled"] = lambda x: comp4(x["a"], x["p"], x["n"], t)
        out["floor"] = Floor(NCE_BATCH, case.n, case.d)
    return out


def estimate_mb(case: Case, name: str) -> float:
    """A rough upper estimate of an implementation's peak extra memory, to skip what cannot fit."""
    f32 = 4.0 / 2**20
    if case.kind == "nce-idx":
        mat = NCE_BATCH * case.n * f32
        vec = (2 * NCE_BATCH + POOL_SIZE) * case.d * f32
        gathered = NCE_BATCH * case.n * case.d * f32
        if name == "contrastlab":
            block = L.default_block_rows(NCE_BATCH, POOL_SIZE, case.d)
            return 6 * vec + 3 * block * POOL_SIZE * f32
        bank = NCE_BATCH * POOL_SIZE * f32
        return {"floor": mat + vec, "floor-bank": bank + vec}.get(
            name, 3 * gathered + 6 * mat + 4 * vec
        )
    if case.kind == "nce":
        mat = NCE_BATCH * case.n * f32
        vec = (NCE_BATCH + case.n) * case.d * f32
        strip = L.default_block_rows(NCE_BATCH, case.n, case.d) * case.n * f32
        return {"contrastlab": 6 * vec + 3 * strip, "floor": mat + vec}.get(name, 6 * mat + 4 * vec)
    n2 = case.n * case.n * f32
    vec = case.n * case.d * f32
    if name.startswith("contrastlab"):
        return 8 * vec + 4 * L.default_block_rows(case.n, case.n, case.d) * case.n * f32
    if name == "pml" and case.kind == "ntxent":
        return float(case.n) ** 3 * 4 / 2**20  # its pair-index formulation: an N^3 mask
    factor = {
        "floor": 1,
        "plain": 5,
        "compiled": 3,
        "lightly": 7,
        "pml": 8,
        "supcontrast": 10,
    }.get(name, 8)
    return factor * n2 + 4 * vec


def estimate_s(case: Case, name: str) -> float | None:
    """Seconds per call where it is far from the products: pml's NT-Xent enumerates N^3
    (anchor, positive, negative) triples, about 2e7 per second here (46.6 s at N = 1024)."""
    if name == "pml" and case.kind == "ntxent":
        return float(case.n) ** 3 / 2.3e7
    return None


# ----------------------------------------------------------------------------- timing
def _step(fn: Fn, inputs: dict[str, torch.Tensor]) -> float | None:
    for v in inputs.values():
        if v.requires_grad:
            v.grad = None
    loss = fn(inputs)
    if loss is None:
        return None
    loss.backward()
    return float(loss.detach())


def time_case(
    case: Case, names: list[str], repeats: int, max_call_s: float, with_compile: bool
) -> dict[str, dict[str, Any]]:
    """Median forward+backward ms of each implementation, interleaved; and its loss value."""
    torch._dynamo.reset()
    impls = implementations(case, with_compile)
    impls = {k: v for k, v in impls.items() if k in names}
    inputs = make_inputs(case)
    res: dict[str, dict[str, Any]] = {}
    active: list[str] = []
    for name, fn in impls.items():  # warm-up (and compilation), twice for compiled code
        try:
            start = time.perf_counter()
            value = _step(fn, inputs)
            first = time.perf_counter() - start
            if name == "compiled":
                start = time.perf_counter()
                _step(fn, inputs)
                first = time.perf_counter() - start
        except (RuntimeError, MemoryError) as err:  # pragma: no cover - depends on the machine
            res[name] = {"skipped": f"failed: {str(err).splitlines()[0][:120]}"}
            continue
        res[name] = {"value": value, "samples": [1e3 * first]}
        if first <= max_call_s:
            active.append(name)
        else:
            res[name]["note"] = f"one run only (a call takes {first:.1f} s > {max_call_s} s)"
    for name in active:
        res[name]["samples"] = []
    for _ in range(repeats):
        for name in active:
            gc.collect()
            start = time.perf_counter()
            _step(impls[name], inputs)
            res[name]["samples"].append(1e3 * (time.perf_counter() - start))
    for r in res.values():
        if "samples" in r:
            r["ms"] = statistics.median(r["samples"])
    if "floor" in impls and "floor" in res and "ms" in res["floor"]:
        fl = impls["floor"]
        assert isinstance(fl, Floor)
        samples = []
        for _ in range(max(3, repeats)):
            start = time.perf_counter()
            fl.first_product()
            samples.append(1e3 * (time.perf_counter() - start))
        res["floor"]["first_product_ms"] = statistics.median(samples)
    return res


# ----------------------------------------------------------------------------- memory
def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_worker(case: Case, name: str) -> dict[str, Any]:
    """In a fresh process: warm up at the same shape, then sample the RSS during one step."""
    impls = implementations(case, with_compile=name == "compiled")
    fn = impls[name]
    inputs = make_inputs(case)
    _step(fn, inputs)
    gc.collect()
    base = _rss_mb()
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_mb())
            time.sleep(0.0005)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _step(fn, inputs)
    done.set()
    th.join()
    peak = max(peak, _rss_mb())
    return {"peak_extra_mb": peak - base}


def measure_memory(case: Case, name: str, timeout: float) -> dict[str, Any]:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    cmd = [sys.executable, __file__, "--memory-worker", json.dumps(asdict(case)), name]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        return {"memory_skipped": f"memory run timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1][:120]
        return {"memory_skipped": f"memory run failed: {tail}"}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# ----------------------------------------------------------------------------- driver
def grid(args: argparse.Namespace) -> list[Case]:
    kinds = args.only or list(LOSS_KINDS)
    cases: list[Case] = []
    for kind in kinds:
        if kind == "nce":
            for d in args.nce_d:
                for k in args.k:
                    cases.append(Case("nce", k, d))
        elif kind == "nce-idx":
            for d in args.nce_d:
                for k in args.k:
                    cases.append(Case("nce-idx", k, d))
        else:
            for d in args.d:
                for n in args.n:
                    cases.append(Case(kind, n, d))
    return cases


def run_case(case: Case, args: argparse.Namespace) -> list[dict[str, Any]]:
    with_compile = not args.no_compile
    if args.quick:  # compile (tens of seconds per shape) only at the largest size
        with_compile &= case.n == max(args.k if case.kind.startswith("nce") else args.n)
    names = list(implementations(case, with_compile=with_compile))
    if args.impls:
        names = [n for n in names if n in args.impls]
    budget = args.mem_budget_gb * 1024
    records: list[dict[str, Any]] = []
    runnable = []
    for name in names:
        est = estimate_mb(case, name)
        rec: dict[str, Any] = {"case": case.title, **asdict(case), "impl": name, "est_mb": est}
        est_s = estimate_s(case, name)
        if est > budget:
            rec["skipped"] = f"estimated {est / 1024:.1f} GB > budget {args.mem_budget_gb} GB"
        elif est_s is not None and est_s > args.max_call_s:
            rec["skipped"] = f"estimated {est_s:.0f} s per call > --max-call-s {args.max_call_s}"
        else:
            runnable.append(name)
        records.append(rec)
    timed = time_case(case, runnable, args.repeats, args.max_call_s, with_compile)
    base = timed.get("contrastlab", {}).get("value")
    for rec in records:
        r = timed.get(rec["impl"])
        if r is None:
            continue
        rec.update({k: v for k, v in r.items() if k != "samples"})
        rec["samples_ms"] = r.get("samples")
        if rec.get("value") is not None and base is not None:
            rec["agrees"] = abs(rec["value"] - base) <= 1e-4 * max(1.0, abs(base))
        if "ms" in rec and args.memory and rec["impl"] in args.memory_impls_for(case):
            rec.update(measure_memory(case, rec["impl"], args.memory_timeout))
    return records


def _fmt(x: float | None, nd: int = 1) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def markdown(records: list[dict[str, Any]], header: str) -> str:
    lines = [header, ""]
    lines += [
        "| case | impl | ms | peak extra MB | contrastlab / impl (time) | "
        "contrastlab / impl (memory) | agrees | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by_case: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_case.setdefault(r["case"], []).append(r)
    for title, recs in by_case.items():
        cl = next((r for r in recs if r["impl"] == "contrastlab"), {})
        for r in recs:
            ms, mb = r.get("ms"), r.get("peak_extra_mb")
            t_ratio = cl.get("ms") / ms if ms and cl.get("ms") else None
            m_ratio = (
                cl.get("peak_extra_mb") / mb
                if mb and mb > 0.5 and cl.get("peak_extra_mb") is not None
                else None
            )
            note = r.get("skipped") or r.get("note") or r.get("memory_skipped") or ""
            if r["impl"] == "floor" and r.get("first_product_ms") is not None:
                note = f"3 products; the first (S = Q K^T) alone: {r['first_product_ms']:.1f} ms"
            agrees = {True: "yes", False: "NO"}.get(r.get("agrees"), "-")  # type: ignore[arg-type]
            lines.append(
                f"| {title} | {r['impl']} | {_fmt(ms)} | {_fmt(mb)} | {_fmt(t_ratio, 2)} | "
                f"{_fmt(m_ratio, 2)} | {agrees} | {note} |"
            )
    lines += ["", "Targets:", ""]
    lines += targets(records)
    return "\n".join(lines)


def targets(records: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, checked on whatever configurations were measured."""
    out = ["| target | case | measured | met |", "|---|---|---|---|"]
    idx = {(r["case"], r["impl"]): r for r in records}
    cases = sorted({(r["kind"], r["n"], r["d"], r["case"]) for r in records})

    def ms(title: str, impl: str) -> float | None:
        r = idx.get((title, impl))
        return None if r is None else r.get("ms")

    for kind, n, d, title in cases:
        cl = ms(title, "contrastlab")
        fl = ms(title, "floor")
        if cl is None:
            continue
        if kind == "nce":
            if fl:
                out.append(
                    f"| explicit k, shared pool: <= 2x the B x k products | {title} | "
                    f"{cl / fl:.2f}x | {'yes' if cl <= 2 * fl else 'no'} |"
                )
            continue
        if kind == "nce-idx":
            pl = ms(title, "plain")
            if pl:
                out.append(
                    f"| per-anchor negatives: faster than the dense gather | {title} | "
                    f"{pl / cl:.2f}x faster | {'yes' if cl < pl else 'no'} |"
                )
            continue
        if fl and n >= 4096 and d == 128:
            out.append(
                f"| N >= 4096, d = 128: <= 1.3x floor | {title} | {cl / fl:.2f}x | "
                f"{'yes' if cl <= 1.3 * fl else 'no'} |"
            )
        if fl and d >= 1024:
            out.append(
                f"| d >= 1024: <= 1.1x floor | {title} | {cl / fl:.2f}x | "
                f"{'yes' if cl <= 1.1 * fl else 'no'} |"
            )
        if n >= 4096 and d == 128:
            comp = ms(title, "compiled")
            if comp:
                out.append(
                    f"| faster than torch.compile reference | {title} | {comp / cl:.2f}x faster |"
                    f" {'yes' if cl < comp else 'no'} |"
                )
            for peer in ("lightly", "supcontrast"):
                pm = ms(title, peer)
                if pm:
                    out.append(
                        f"| >= 3x faster than {peer} | {title} | {pm / cl:.2f}x faster | "
                        f"{'yes' if pm >= 3 * cl else 'no'} |"
                    )
        if n == 16384 and d == 128:
            r = idx.get((title, "contrastlab"), {})
            mb = r.get("peak_extra_mb")
            if mb is not None:
                out.append(
                    f"| extra memory at N = 16384 < 150 MB | {title} | {mb:.0f} MB | "
                    f"{'yes' if mb < 150 else 'no'} |"
                )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a subset in about two minutes")
    parser.add_argument("--only", nargs="*", choices=LOSS_KINDS, default=None)
    parser.add_argument("--n", nargs="*", type=int, default=None, help="in-batch rows N")
    parser.add_argument("--d", nargs="*", type=int, default=None, help="in-batch dimensions")
    parser.add_argument("--k", nargs="*", type=int, default=None, help="explicit k values")
    parser.add_argument("--nce-d", nargs="*", type=int, default=None)
    parser.add_argument("--impls", nargs="*", default=None, help="only these implementations")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--max-call-s", type=float, default=20.0)
    parser.add_argument("--mem-budget-gb", type=float, default=None)
    parser.add_argument("--memory-timeout", type=float, default=300.0)
    parser.add_argument("--no-memory", dest="memory", action="store_false")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/kernel.json"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/kernel.md"))
    parser.add_argument("--memory-worker", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.memory_worker is not None:
        case = Case(**json.loads(args.memory_worker[0]))
        print(json.dumps(memory_worker(case, args.memory_worker[1])))
        return 0

    if args.quick:
        args.only = args.only or ["ntxent", "supcon", "debiased", "hscl", "nce", "nce-idx"]
        args.n = args.n or [1024, 4096]
        args.d = args.d or [128]
        args.k = args.k or [256, 4096]
        args.repeats = args.repeats or 3
    args.n = args.n or list(IN_BATCH_N)
    args.d = args.d or list(DIMS)
    args.k = args.k or list(NCE_K)
    args.nce_d = args.nce_d or [128]
    args.repeats = args.repeats or 5
    if args.mem_budget_gb is None:
        with open("/proc/meminfo") as fh:
            avail = next(int(x.split()[1]) for x in fh if x.startswith("MemAvailable"))
        args.mem_budget_gb = round(min(8.0, 0.4 * avail / 2**20), 1)

    quick = args.quick

    def memory_impls_for(case: Case) -> set[str]:
        # --quick: memory of every implementation at the largest N only (subprocesses are slow)
        if quick and case.kind != "nce" and case.n != max(args.n):
            return {"contrastlab"}
        return {
            "contrastlab",
            "contrastlab-rows",
            "plain",
            "compiled",
            "lightly",
            "pml",
            "supcontrast",
            "dense",
        }

    args.memory_impls_for = memory_impls_for
    torch.manual_seed(0)
    header = (
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, t = "
        f"{TEMPERATURE}, forward + backward, median of {args.repeats} interleaved runs; memory: "
        f"peak RSS growth during one step in a fresh process (after a warm-up step); "
        f"budget {args.mem_budget_gb} GB; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    records: list[dict[str, Any]] = []
    start = time.time()
    for case in grid(args):
        t0 = time.time()
        records.extend(run_case(case, args))
        print(f"{case.title}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"header": header, "records": records}, indent=1))
        args.out.write_text(markdown(records, header) + "\n")
    if quick and args.memory:
        # the memory target: the tiled kernel at N = 16384, d = 128 (memory only)
        big = Case("ntxent", 16384, 128)
        rec = {"case": big.title, **asdict(big), "impl": "contrastlab"}
        rec.update(measure_memory(big, "contrastlab", args.memory_timeout))
        rec["note"] = "memory only (--quick)"
        records.append(rec)
    table = markdown(records, header)
    args.json.write_text(json.dumps({"header": header, "records": records}, indent=1))
    args.out.write_text(table + "\n")
    print(table)
    print(f"total {time.time() - start:.0f} s", file=sys.stderr)
    bad = [r for r in records if r.get("agrees") is False]
    if bad:
        print(
            "disagreeing implementations: " + ", ".join(f"{r['case']}/{r['impl']}" for r in bad),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
