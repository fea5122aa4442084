"""Griffe extension for the docs build: render the reST bits of the docstrings.

The library's docstrings use Sphinx roles (``:class:`~datetime.timedelta```)
and ``::`` literal-block markers.  mkdocstrings renders Markdown, so this
extension rewrites a role into a code span of its target (the last dotted
part when the target starts with ``~``) and ``::`` at the end of a paragraph
into ``:`` (the indented block after it renders as code in Markdown too).

Used only by ``mkdocs.yml``; excluded from the built site.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(class|meth|func|attr|data|mod|exc|obj|const):`(~?)([^`]+)`")
_LITERAL = re.compile(r"(\S)::[ \t]*$", re.MULTILINE)


def _role(match: re.Match[str]) -> str:
    kind, short, target = match.groups()
    target = target.strip()
    if short:
        target = target.rsplit(".", 1)[-1]
    if kind in {"meth", "func"} and not target.endswith(")"):
        target += "()"
    return f"`{target}`"


def rewrite(text: str) -> str:
    """The docstring ``text`` with roles and ``::`` markers made Markdown."""
    return _LITERAL.sub(r"\1:", _ROLE.sub(_role, text))


class SphinxRoles(griffe.Extension):
    """Rewrite every docstring once, when its object is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
