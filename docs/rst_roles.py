"""Griffe extension for the API reference: the docstrings' reST markup as Markdown.

The docstrings cite other objects with reST roles (``:class:`Engine```,
``:meth:`~tdevlab.client.api.Client.call```) and show code after ``::`` or a
``.. code-block::`` line, as the project's Sphinx-style docstrings do. Here a role becomes
an optional cross-reference (a link when the object is in the reference, its name in code
otherwise, never a broken link) and the code markers become Markdown code blocks.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|data|exc|mod|obj|const):`(~?)([^`<>]+)`")
_DIRECTIVE = re.compile(r"^[ \t]*\.\. code-block::.*$", re.MULTILINE)
_LITERAL = re.compile(r"(\S)::$", re.MULTILINE)
_BARE_LITERAL = re.compile(r"^([ \t]*)::$", re.MULTILINE)


class RstRoles(griffe.Extension):
    """Rewrite every docstring of a loaded package."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = _markdown(obj.docstring.value, obj, loader)


def _walk(obj: griffe.Object) -> list[griffe.Object]:
    found = [obj]
    for member in obj.members.values():
        if not member.is_alias:
            found.extend(_walk(member))  # type: ignore[arg-type]
    return found


def _markdown(text: str, obj: griffe.Object, loader: griffe.GriffeLoader) -> str:
    def role(match: re.Match[str]) -> str:
        short, target = match.group(1), match.group(2).strip()
        title = target.rsplit(".", 1)[-1] if short else target
        identifier = _resolve(target, obj, loader)
        code = f"<code>{html.escape(title)}</code>"
        if identifier is None:
            return code
        return f'<autoref identifier="{html.escape(identifier)}" optional>{code}</autoref>'

    text = _ROLE.sub(role, text)
    text = _DIRECTIVE.sub("", text)
    text = _BARE_LITERAL.sub("", text)
    return _LITERAL.sub(r"\1:", text)


def _resolve(target: str, obj: griffe.Object, loader: griffe.GriffeLoader) -> str | None:
    """The canonical path of ``target`` seen from ``obj`` (its scopes, then absolute)."""
    scopes: list[griffe.Object] = []
    scope: griffe.Object | None = obj
    while scope is not None:
        scopes.append(scope)
        scope = scope.parent
    for path in [f"{s.path}.{target}" for s in scopes] + [target]:
        try:
            found = loader.modules_collection.get_member(path)
        except Exception:  # any lookup failure means "not here"
            continue
        try:
            return str(found.canonical_path)
        except Exception:  # an alias that does not resolve
            return str(found.path)
    return None
