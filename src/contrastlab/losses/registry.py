"""The loss registry: one :class:`LossSpec` per loss name, the single owner of what the run
config and the trainer know of a loss.

A spec says which **family** the loss belongs to, and from that everything the trainer does:

- ``in-batch``: the negatives of an anchor are the other 2B - 2 views of the step (k is not a
  free parameter; ``loss.k`` resolves to null); the loss gets the two views ``z1, z2`` (and
  ``labels`` if it asks for them);
- ``pool``: **explicit k** negatives per anchor drawn from a pool of ``loss.pool_size`` samples
  encoded once per step (:mod:`contrastlab.losses.pool`); the loss gets both directions as
  anchors (``anchors = [z1; z2]``, ``positives = [z2; z1]``, ``anchor_labels``), the ``pool``,
  its labels, the ``generator`` of the draws and, for the step's statistics, ``stats`` and
  ``pool_ids``.

and which **law** its negatives follow: a fixed sampler kind (``scl``: ``other-class``,
``hscl``: ``tilted-other-class``, ``ucl``: ``uniform``, ``hucl``: ``tilted``;
:data:`contrastlab.losses.samplers.SAMPLER_LAWS`) or one chosen by ``loss.sampler`` (``nce``,
default ``uniform``). Whether beta applies is decided here once (:meth:`LossSpec.tilted`): for
a pool loss, by its law's kind; for an in-batch loss, by whether it takes ``beta``.

``params`` maps the ``loss`` fields the function reads to its keyword arguments (every other
field of the section resolves to a neutral value, so grids do not repeat a run), ``fixed``
holds constant keywords, ``defaults`` the loss's own default for ``temperature``, ``beta`` or
``tau_plus`` (the library-wide ones are :data:`DEFAULTS`).

Adding a loss is one function (any module, inside or outside the package) plus one
:func:`register_loss` call; it is then a valid ``loss.name`` for the trainer and for sweeps (the
local process pool and Ray re-register the specs registered at run time in each worker; the
function must be importable by its module path there). For the command line, name the module in
``$CONTRASTLAB_PLUGINS`` (imported before the first lookup) or install it with an entry point
in the ``contrastlab.losses`` group (:func:`load_plugins`).

The built-in entries: ``infonce`` (SimCLR NT-Xent; Chen et al. 2020), ``supcon`` (Khosla et al.
2020, L_out), ``debiased-hard`` (Chuang et al. 2020; Robinson et al. 2021), ``nce`` (explicit-k
NCE, Arora et al. 2019 eq. (2); Awasthi et al. 2022), ``scl``/``hscl``/``ucl``/``hucl`` (Jiang
et al. 2023).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from contrastlab._plugins import PLUGIN_ENV, PLUGIN_GROUP
from contrastlab._validation import check_choice
from contrastlab.losses.debiased import debiased_hard
from contrastlab.losses.infonce import info_nce
from contrastlab.losses.pool import pool_hard_contrastive, pool_nce
from contrastlab.losses.samplers import SAMPLERS, sampler_support, sampler_tilted
from contrastlab.losses.supcon import supcon

__all__ = [
    "BATCH_ARGS",
    "DEFAULTS",
    "FAMILIES",
    "LOSS_FIELDS",
    "PLUGIN_ENV",
    "PLUGIN_GROUP",
    "LossSpec",
    "get_loss",
    "load_plugins",
    "loss_names",
    "register_loss",
    "registered_at_run_time",
    "unregister_loss",
]

FAMILIES = ("in-batch", "pool")
#: what a step offers a loss function (by keyword); a spec's ``batch`` names the ones it takes
BATCH_ARGS = ("z1", "z2", "labels", "anchors", "positives", "anchor_labels", "pool",
              "pool_labels", "generator", "stats", "pool_ids")
#: the ``loss`` config fields a loss function can read (``LossSpec.params`` keys)
LOSS_FIELDS = ("k", "beta", "tau_plus", "temperature", "sampler", "exact", "replacement",
               "negatives_reduction", "score")
#: the library-wide defaults of the ``loss`` fields that have one per loss (a spec's
#: ``defaults`` overrides them); beta's applies where the loss is tilted, tau_plus's where the
#: loss takes it
DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {"temperature": 1.0, "beta": 1.0, "tau_plus": 0.1, "sampler": "uniform"})
_POOL_BATCH = ("anchors", "positives", "anchor_labels", "pool", "pool_labels")
_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")


def _frozen(m: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(m))


@dataclass(frozen=True)
class LossSpec:
    """One loss of the registry (module docstring).

    Attributes:
        name: the ``loss.name`` (lower case, words joined by ``-`` or ``_``).
        fn: the loss function; it is called with keywords only: the ``batch`` arguments, the
            ``params`` and the ``fixed`` values. The features it gets are already normalized by
            the encoder (``loss.normalize``); a loss with its own normalization gets
            ``normalize="none"`` through ``fixed``.
        family: ``in-batch`` or ``pool`` (explicit k).
        batch: the names of :data:`BATCH_ARGS` it takes.
        params: config field (:data:`LOSS_FIELDS`) -> keyword of ``fn``.
        fixed: constant keywords.
        sampler: the fixed law of a pool loss (a kind of
            :data:`~contrastlab.losses.samplers.SAMPLERS`); None: ``loss.sampler`` chooses it
            (then ``params`` must read ``sampler``).
        defaults: this loss's defaults of ``temperature`` / ``beta`` / ``tau_plus``.
        reference: paper and equation (shown by the docs and error messages).
        sharded: an in-batch loss's data-parallel form (``train.local_loss``): the same
            keywords plus ``group``, gathering the batch itself and computing only this
            rank's anchors (the built-in ones: the loss with ``gather="local"``,
            :mod:`contrastlab.losses.sharded`); None: not available.
    """

    name: str
    fn: Callable[..., torch.Tensor]
    family: str
    batch: tuple[str, ...]
    params: Mapping[str, str] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    sampler: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    reference: str = ""
    sharded: Callable[..., torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"LossSpec.name must be lower-case words joined by '-' or '_' "
                             f"(e.g. 'my-loss'); got {self.name!r}")
        if not callable(self.fn):
            raise ValueError(f"LossSpec {self.name!r}: fn must be callable; got {self.fn!r}")
        check_choice(f"LossSpec {self.name!r}: family", self.family, FAMILIES)
        object.__setattr__(self, "batch", tuple(self.batch))
        for arg in self.batch:
            check_choice(f"LossSpec {self.name!r}: batch argument", arg, BATCH_ARGS)
        for key in self.params:
            check_choice(f"LossSpec {self.name!r}: params key", key, LOSS_FIELDS)
        for key in self.defaults:
            check_choice(f"LossSpec {self.name!r}: defaults key", key,
                         ("temperature", "beta", "tau_plus"))
        if self.sampler is not None:
            check_choice(f"LossSpec {self.name!r}: sampler", self.sampler, SAMPLERS)
        self._check_family()
        for name in ("params", "fixed", "defaults"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (to worker processes)
        return (LossSpec, (self.name, self.fn, self.family, self.batch, dict(self.params),
                           dict(self.fixed), self.sampler, dict(self.defaults), self.reference,
                           self.sharded))

    def _check_family(self) -> None:
        if self.family == "in-batch":
            bad = {"k", "sampler", "replacement", "exact"} & set(self.params)
            if bad or self.sampler is not None or "pool" in self.batch:
                raise ValueError(f"LossSpec {self.name!r}: an in-batch loss has no k, sampler, "
                                 "pool or replacement (its negatives are the 2B - 2 other "
                                 "views); use family='pool'")
            return
        if self.sharded is not None:
            raise ValueError(f"LossSpec {self.name!r}: only an in-batch loss has a sharded "
                             "form (a pool loss draws its negatives for the global batch)")
        if "k" not in self.params or "pool" not in self.batch:
            raise ValueError(f"LossSpec {self.name!r}: a pool loss takes k (params) and the pool "
                             "(batch)")
        if (self.sampler is None) != ("sampler" in self.params):
            raise ValueError(f"LossSpec {self.name!r}: a pool loss has a fixed sampler or reads "
                             "loss.sampler, one of the two")

    # ---- what the config resolution asks ------------------------------------------------
    @property
    def explicit_k(self) -> bool:
        """Whether ``loss.k`` is a free parameter (the pool family)."""
        return self.family == "pool"

    def takes(self, config_field: str) -> bool:
        """Whether the function reads ``loss.<config_field>``."""
        return config_field in self.params

    def law(self, sampler: str | None = None) -> str | None:
        """The sampler kind of the negatives given ``loss.sampler`` (None for in-batch)."""
        if not self.explicit_k:
            return None
        if self.sampler is not None:
            return self.sampler
        return check_choice("loss.sampler", sampler or DEFAULTS["sampler"], SAMPLERS)

    def tilted(self, sampler: str | None = None) -> bool:
        """Whether beta applies: a pool loss whose law is tilted, an in-batch loss reading beta."""
        law = self.law(sampler)
        if law is not None:
            return sampler_tilted(law) and self.takes("beta")
        return self.takes("beta")

    def supervised(self, sampler: str | None = None) -> bool:
        """Whether the negatives are drawn from the other classes (the pool needs labels)."""
        law = self.law(sampler)
        return law is not None and sampler_support(law) == "other-class"

    def default(self, config_field: str) -> Any:
        """This loss's default of ``temperature``, ``beta``, ``tau_plus`` or ``sampler``."""
        return self.defaults.get(config_field, DEFAULTS[config_field])

    # ---- the call ------------------------------------------------------------------------
    def __call__(self, z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor,
                 config: Mapping[str, Any], pool: torch.Tensor | None = None,
                 pool_labels: torch.Tensor | None = None,
                 generator: torch.Generator | None = None,
                 stats: dict[str, float] | None = None,
                 pool_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of one step's encoded views (and pool) under the resolved ``config`` (the
        ``loss`` section as a mapping). ``stats`` receives ``distinct_negatives`` (2B - 2 for an
        in-batch loss; a pool loss counts its draws)."""
        if self.explicit_k and pool is None:
            raise ValueError(f"loss {self.name!r} needs a negative pool")
        offered: dict[str, Any] = {"z1": z1, "z2": z2, "labels": labels, "pool": pool,
                                   "pool_labels": pool_labels, "generator": generator,
                                   "stats": stats, "pool_ids": pool_ids}
        if self.explicit_k:
            offered.update(anchors=torch.cat([z1, z2]), positives=torch.cat([z2, z1]),
                           anchor_labels=torch.cat([labels, labels]))
        elif stats is not None:
            stats["distinct_negatives"] = float(2 * z1.shape[0] - 2)
        return self.fn(**self._keywords(offered, config))

    def _keywords(self, offered: Mapping[str, Any],
                  config: Mapping[str, Any]) -> dict[str, Any]:
        """The call's keywords: the batch arguments it takes, its params from ``config``, the
        fixed values."""
        kwargs = {arg: offered[arg] for arg in self.batch}
        kwargs.update({kw: config[key] for key, kw in self.params.items()})
        kwargs.update(self.fixed)
        return kwargs

    def local(self, z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor,
              config: Mapping[str, Any], group: Any = None) -> torch.Tensor:
        """This rank's share of the loss in a data-parallel step (``train.local_loss``): the
        :attr:`sharded` form on the rank's slices ``z1``, ``z2``, ``labels`` (it gathers the
        batch and computes the rank's own anchors: the local mean, whose gradient after DDP's
        average is the single-process gradient; :mod:`contrastlab.losses.sharded`)."""
        if self.sharded is None:
            raise ValueError(f"loss {self.name!r} has no sharded form; train.local_loss "
                             "applies to the in-batch losses with one")
        offered = {"z1": z1, "z2": z2, "labels": labels}
        return self.sharded(**self._keywords(offered, config), group=group)


_REGISTRY: dict[str, LossSpec] = {}
_BUILT_IN: frozenset[str] = frozenset()


def register_loss(spec: LossSpec, replace: bool = False) -> LossSpec:
    """Add ``spec`` to the registry (``replace=True`` overwrites a spec registered at run time;
    the built-in losses cannot be replaced). Returns it."""
    if not isinstance(spec, LossSpec):
        raise TypeError(f"register_loss expects a LossSpec; got {type(spec).__name__}")
    if spec.name in _BUILT_IN:
        raise ValueError(f"loss {spec.name!r} is built in and cannot be replaced")
    if spec.name in _REGISTRY and not replace and _REGISTRY[spec.name] != spec:
        raise ValueError(f"loss {spec.name!r} is already registered (replace=True overwrites)")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_loss(name: str) -> None:
    """Remove a loss registered at run time (the built-in ones stay)."""
    if name in _BUILT_IN:
        raise ValueError(f"loss {name!r} is built in and cannot be removed")
    _REGISTRY.pop(name, None)


_plugins_loaded = False


def load_plugins() -> None:
    """Register the losses of the modules named by ``$CONTRASTLAB_PLUGINS`` (imported) and of
    the installed ``contrastlab.losses`` entry points, once per process (the first lookup does
    it), so that the command line and every worker process know them. A plugin that cannot be
    loaded is a one-line ValueError naming it."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for module in (m.strip() for m in os.environ.get(PLUGIN_ENV, "").split(",")):
        if module:
            try:
                importlib.import_module(module)
            except Exception as err:
                raise ValueError(f"{PLUGIN_ENV}: cannot import {module!r} "
                                 f"({type(err).__name__}: {str(err).splitlines()[0]})") from None
    for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        try:
            obj = ep.load()
            found = obj() if callable(obj) and not isinstance(obj, LossSpec) else obj
            for spec in [found] if isinstance(found, LossSpec) else list(found):
                register_loss(spec, replace=True)
        except Exception as err:
            raise ValueError(f"loss plugin {ep.name!r} ({ep.value}): "
                             f"{type(err).__name__}: {str(err).splitlines()[0]}") from None


def loss_names() -> tuple[str, ...]:
    """The registered loss names: the built-in ones first, then the others in order
    (plugins loaded first, :func:`load_plugins`)."""
    load_plugins()
    return tuple(_REGISTRY)


def get_loss(name: str) -> LossSpec:
    """The spec of ``name``; a ValueError listing the names for an unknown one."""
    load_plugins()
    spec = _REGISTRY.get(name)
    if spec is None:
        check_choice("loss.name", name, loss_names())
    assert spec is not None
    return spec


def registered_at_run_time() -> tuple[LossSpec, ...]:
    """The specs added by :func:`register_loss` (what a worker process must register again)."""
    return tuple(s for n, s in _REGISTRY.items() if n not in _BUILT_IN)


def _jiang(name: str, law: str, batch: tuple[str, ...]) -> LossSpec:
    """SCL / HSCL / UCL / HUCL: :func:`~contrastlab.losses.pool.pool_hard_contrastive` with the
    support of ``law`` (the law's one other name, ``SAMPLER_LAWS``)."""
    params = {"beta": "beta", "k": "k", "temperature": "temperature", "exact": "exact",
              "negatives_reduction": "negatives_reduction", "replacement": "replace"}
    return LossSpec(name, pool_hard_contrastive, "pool", batch, params,
                    {"negatives": sampler_support(law)}, sampler=law,
                    reference=f"Jiang et al. 2023, {name.upper()} (their code, rjiang03/HCL)")


def _built_in() -> tuple[LossSpec, ...]:
    in_batch = {"normalize": "none"}  # the encoder has normalized the features
    pool_batch = (*_POOL_BATCH, "generator", "stats", "pool_ids")
    return (
        LossSpec("infonce", info_nce, "in-batch", ("z1", "z2"), {"temperature": "temperature"},
                 in_batch, defaults={"temperature": 0.5},
                 reference="Chen et al. 2020 (SimCLR NT-Xent)",
                 sharded=functools.partial(info_nce, gather="local")),
        LossSpec("supcon", supcon, "in-batch", ("z1", "z2", "labels"),
                 {"temperature": "temperature"}, in_batch, defaults={"temperature": 0.1},
                 reference="Khosla et al. 2020, L_out",
                 sharded=functools.partial(supcon, gather="local")),
        LossSpec("debiased-hard", debiased_hard, "in-batch", ("z1", "z2"),
                 {"temperature": "temperature", "tau_plus": "tau_plus", "beta": "beta"},
                 in_batch, defaults={"temperature": 0.5},
                 reference="Chuang et al. 2020 (beta = 0); Robinson et al. 2021",
                 sharded=functools.partial(debiased_hard, gather="local")),
        LossSpec("nce", pool_nce, "pool", pool_batch,
                 {"sampler": "sampler", "beta": "beta", "k": "k", "score": "score",
                  "temperature": "temperature", "replacement": "replace"},
                 reference="Arora et al. 2019 eq. (2); Awasthi et al. 2022"),
        *(_jiang(name, law, pool_batch) for name, law in
          (("scl", "other-class"), ("hscl", "tilted-other-class"), ("ucl", "uniform"),
           ("hucl", "tilted"))),
    )


for _spec in _built_in():
    _REGISTRY[_spec.name] = _spec
_BUILT_IN = frozenset(_REGISTRY)
