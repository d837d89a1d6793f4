"""The conventions table of docs/conventions.md, generated from the loss registry.

    python docs/gen_conventions.py           # rewrite the table in docs/conventions.md
    python docs/gen_conventions.py --check   # exit 1 when the page's table is out of date

Every number and name in the table comes from :mod:`contrastlab.losses.registry` (the family,
the law of the negatives, the defaults of temperature / beta / tau_plus, the reference) and from
the signature of the loss function a user calls (its ``normalize`` and ``k`` defaults); only the
*why* of each row is written here, and it must quote the row's temperature and normalization,
so a changed default fails ``tests/test_docs.py`` until the page (and its reason) is updated.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import contrastlab.losses as L
from contrastlab.losses.registry import LossSpec, get_loss, loss_names, registered_at_run_time
from contrastlab.train.config import LossConfig

PAGE = Path(__file__).resolve().parent / "conventions.md"
START, END = "<!-- conventions-table:start -->", "<!-- conventions-table:end -->"

#: the function a user calls for each built-in loss (the registry's ``fn`` of the pool losses
#: is the trainer's pool form; the keyword defaults shown are those of this function)
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "infonce": L.info_nce,
    "supcon": L.supcon,
    "debiased-hard": L.debiased_hard,
    "nce": L.nce_loss,
    "scl": L.scl,
    "hscl": L.hscl,
    "ucl": L.ucl,
    "hucl": L.hucl,
}

_JIANG = ("Jiang et al. 2023's code (`rjiang03/HCL`): features projected onto the unit `ball` "
          "(a vector inside it is left as it is), t = 1, the mean over the k negatives, the "
          "anchor among its own positives.")
#: why each default is what it is (from the loss's docstring and the paper or code it follows);
#: each must quote the row's temperature ("t = 0.5") and normalization ("`sphere`")
WHY: dict[str, str] = {
    "infonce": ("SimCLR (Chen et al. 2020) computes NT-Xent on L2-normalized projections "
                "(cosine similarities: `sphere`), with t = 0.5 in its CIFAR-10 setting (also "
                "lightly's `NTXentLoss` default); the loss is the mean over the 2B anchors, both "
                "directions."),
    "supcon": ("Khosla et al. 2020 normalize onto the `sphere` and train at t = 0.1; L_out, the "
               "form they recommend; no t / base_t factor unless `base_temperature` is given "
               "(their code multiplies by it)."),
    "debiased-hard": ("The published code of Chuang et al. 2020 and Robinson et al. 2021: "
                      "`sphere` features, t = 0.5, tau+ = 0.1 and beta = 1, and their lower "
                      "clamp N e^(-1/t) (which assumes unit vectors); beta = 0 is Chuang et al.'s "
                      "debiased loss."),
    "nce": ("The loss of the theory (Arora et al. 2019 eq. (2); Awasthi et al. 2022): k "
            "explicit negatives, written at t = 1 like the population losses of "
            "`contrastlab.theory`; `nce_loss` normalizes nothing (`none`): the theory holds for "
            "any features, and the trainer normalizes in the encoder. The law is "
            "`loss.sampler`."),
    "scl": f"{_JIANG} SCL: negatives from the other classes.",
    "hscl": f"{_JIANG} HSCL: the other classes tilted by exp(beta s); beta = 1 unless set.",
    "ucl": f"{_JIANG} UCL: negatives from the marginal, so the anchor's class can be drawn "
           "(collisions).",
    "hucl": f"{_JIANG} HUCL: the marginal tilted by exp(beta s); beta = 1 unless set.",
}

_LAWS = {
    "uniform": "marginal, uniform (collisions)",
    "other-class": "other classes, uniform",
    "tilted": "marginal, ∝ exp(β s)",
    "tilted-other-class": "other classes, ∝ exp(β s)",
}
HEADER = ("| `loss.name` | function | negatives | k | temperature | normalization | β, τ⁺ "
          "| reference |")


def _hooks() -> Any:
    """docs/hooks.py (its :func:`strip_internal_labels`)."""
    spec = importlib.util.spec_from_file_location("_docs_hooks", PAGE.parent / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    return {name: p.default for name, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _num(x: float) -> str:
    return f"{x:g}"


def _row(spec: LossSpec, strip: Callable[[str], str]) -> str:
    fn = FUNCTIONS.get(spec.name)
    if fn is None or spec.name not in WHY:
        raise KeyError(f"docs/gen_conventions.py: add the function and the reasons of the "
                       f"built-in loss {spec.name!r} to FUNCTIONS and WHY")
    defaults = _defaults(fn)
    t = spec.default("temperature")
    temperature = _num(t)
    if defaults.get("temperature") != t:
        temperature += f" (`{fn.__name__}`: {_num(defaults['temperature'])})"
    norm = defaults.get("normalize", "none")
    if spec.explicit_k:
        law = spec.law()
        negatives = (f"`{spec.sampler}`: {_LAWS[spec.sampler]}" if spec.sampler is not None
                     else f"`loss.sampler` (default `{law}`)")
        k = "explicit: `loss.k` (required)"
        if "k" in defaults:
            k += f"; `{fn.__name__}`: {defaults['k']}"
    else:
        negatives = "in-batch: the other views"
        k = "2B − 2 (`loss.k` is null)"
    extra = []
    if spec.takes("beta"):
        if spec.sampler is None and spec.explicit_k:
            extra.append(f"β = {_num(spec.default('beta'))} with a tilted `loss.sampler`")
        elif spec.tilted():
            extra.append(f"β = {_num(spec.default('beta'))}")
        else:
            extra.append("β = 0 (untilted)")
    if spec.takes("tau_plus"):
        extra.append(f"τ⁺ = {_num(spec.default('tau_plus'))}")
    why = WHY[spec.name]
    for needed in (f"t = {_num(t)}", f"`{norm}`"):
        if needed not in why:
            raise ValueError(f"docs/gen_conventions.py: the reason of {spec.name!r} must quote "
                             f"its default {needed!r}: {why!r}")
    cells = [f"`{spec.name}`", f"`{fn.__name__}`", negatives, k, temperature, f"`{norm}`",
             ", ".join(extra) or "—", strip(spec.reference)]
    return "| " + " | ".join(cells) + " |"


def _why(spec: LossSpec) -> str:
    return f"- **`{spec.name}`**: {WHY[spec.name]}"


def built_in_names() -> list[str]:
    """The built-in losses (the registry's names less those registered at run time)."""
    added = {spec.name for spec in registered_at_run_time()}
    return [name for name in loss_names() if name not in added]


def conventions_table() -> str:
    """The Markdown table (with the trainer's normalization default above it) and the reason
    of each loss's defaults below it."""
    strip = _hooks().strip_internal_labels
    trainer_norm = LossConfig.model_fields["normalize"].default
    lines = [
        f"In the trainer the encoder normalizes the features (`loss.normalize`, default "
        f"`{trainer_norm}` for every loss) and the loss is called with `normalize=\"none\"`; the "
        "normalization column is the default of the function you call yourself.",
        "",
        HEADER,
        "|" + "---|" * HEADER.count(" | ") + "---|",
    ]
    specs = [get_loss(name) for name in built_in_names()]
    lines += [_row(spec, strip) for spec in specs]
    lines += ["", "Why these defaults:", ""]
    lines += [_why(spec) for spec in specs]
    return "\n".join(lines)


def page_table(text: str) -> str:
    """The generated block of the page ``text`` (between the markers)."""
    if START not in text or END not in text:
        raise ValueError(f"{PAGE.name}: the markers {START} / {END} are missing")
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def render(text: str) -> str:
    """``text`` with its generated block replaced by :func:`conventions_table`."""
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    return f"{head}{START}\n{conventions_table()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    text = PAGE.read_text(encoding="utf-8")
    if "--check" in argv:
        if page_table(text) != conventions_table():
            print(f"{PAGE}: the conventions table is out of date; run "
                  "python docs/gen_conventions.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(render(text), encoding="utf-8")
    print(f"wrote the conventions table of {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
