"""MkDocs hooks of the documentation site (``hooks:`` in mkdocs.yml).

The API reference is rendered from the docstrings, which are written for readers of the source:

- they cite an internal specification by label (``(SPEC A6)``, ``SPEC A1-A3``); the site's
  readers do not have that file, so the labels are removed (the paper and equation cited next to
  them stay);
- they use a few reST roles (``:func:`name```); the Google-style parser leaves them as text, so
  they are turned into optional cross-references (a link where the target is documented on the
  site, plain code otherwise), and reST's literal-block marker ``::`` becomes ``:``.

:func:`strip_internal_labels` is also used by ``docs/gen_conventions.py`` for the references of
the loss registry.
"""

from __future__ import annotations

import re
from typing import Any

# one label, a range or a list of them: "SPEC A6", "SPEC A1-A3, A7", "SPEC A5, C1-C3"
_ONE = r"[A-C]\d+(?:\s*[-–]\s*[A-C]?\d+)?"
_LABEL = rf"SPEC\s+{_ONE}(?:\s*,\s*{_ONE})*"
_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), repl)
    for pattern, repl in (
        (rf"\s*\(\s*{_LABEL}\s*\)", ""),  # "(SPEC A1)" alone in parentheses
        (rf"\s*\[\s*[^\]]*?,\s*{_LABEL}\s*\]", ""),  # "[by the seed slides, SPEC A6]"
        (rf"\(\s*{_LABEL}\s*[;,]\s*", "("),  # "(SPEC A2; Arora et al. ...)"
        (rf"\s*[;,]\s*{_LABEL}(?=\s*(?:[)\].;,:<]|$))", ""),  # "(Arora et al. 2019; SPEC A1)"
        (rf"\s*[;,]\s*see\s+{_LABEL}", ""),  # "...; see SPEC A6."
        (rf"(?:\bof\s+|\bthe\s+)?{_LABEL}\s+(?=test-vector)", "the "),  # "the SPEC A6 test-vector"
        (rf"\s+of\s+{_LABEL}(?=\s*[(\s])", ""),  # "the latent-class model of SPEC A1 (Arora"
        (rf"\s*(?<=[.)])\s*{_LABEL}\.", ""),  # a sentence of its own: "... set). SPEC A3."
        (rf"\s*{_LABEL}", ""),  # anything left
        (r"\bthe SPEC table's\b", "the reference table's"),
        (r"\bSPEC's\b", "the specification's"),
    )
)

_ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|exc|obj|const):"
                   r"<code>(?P<tilde>~?)(?P<target>[\w.]+)(?P<call>\(\))?</code>")


def strip_internal_labels(text: str) -> str:
    """``text`` without the internal specification labels (``SPEC A6`` and the like)."""
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    return text


def _role(match: re.Match[str]) -> str:
    target = match["target"]
    shown = target.rsplit(".", 1)[-1] if match["tilde"] else target
    code = f"<code>{shown}{match['call'] or ''}</code>"
    if "." not in target:  # a bare name: no identifier to resolve
        return code
    return f'<autoref identifier="{target}" optional>{code}</autoref>'


def rest_roles_to_links(html: str) -> str:
    """reST roles rendered as text (``:func:<code>x</code>``) -> optional cross-references."""
    html = _ROLE.sub(_role, html)
    return re.sub(r"(?<=\S)::(?=</p>)", ":", html)


def on_page_content(html: str, **kwargs: Any) -> str:
    """Applied to every page's HTML (after mkdocstrings rendered the docstrings, before
    mkdocs-autorefs resolves the cross-references and the search index is built)."""
    return rest_roles_to_links(strip_internal_labels(html))
