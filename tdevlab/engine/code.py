"""Agent code: a genome rendered as short, readable Python, and parsed back without running it.

The rendered source is what the API's binary ``agent_code`` frames carry::

    # NL_Input_Agent_v42 (agent-42), born in generation 17.
    learning_rate = 0.0031622776601683794
    temperature = 0.7
    architecture = 'transformer'

:func:`parse_agent_code` reads such a source with :mod:`ast` only -- it is never executed
-- and accepts nothing but comments, a docstring and ``name = literal`` statements, then validates
the genome against the gene space.
"""

from __future__ import annotations

import ast
from typing import Any

from tdevlab.engine.genes import FloatArray, GeneSpace
from tdevlab.exceptions import ConstraintViolation, InvalidAgentCode, InvalidParameters

__all__ = ["parse_agent_code", "render_agent_code"]


def render_agent_code(
    space: GeneSpace, genes: FloatArray, *, agent_id: str = "", name: str = "", generation: int = 0
) -> str:
    """Return the Python source stating one genome (floats written to round-trip exactly)."""
    header = (
        f"{name} ({agent_id}), born in generation {generation}." if name else "An agent genome."
    )
    # A comment, with line breaks removed: no agent name can change what the code states.
    lines = ["# " + " ".join(header.splitlines())]
    for gene_name, value in space.decode(genes).items():
        lines.append(f"{gene_name} = {value!r}")
    return "\n".join(lines) + "\n"


def parse_agent_code(source: str | bytes, space: GeneSpace, *, max_bytes: int) -> FloatArray:
    """Parse agent source into a genome row, without executing anything.

    Args:
        source: The code, as text or UTF-8 bytes.
        space: The gene space the genome must fit.
        max_bytes: The largest accepted source (the engine passes its memory limit in bytes).

    Returns:
        The genome as a matrix row.

    Raises:
        ConstraintViolation: if the source is larger than ``max_bytes``.
        InvalidAgentCode: if it is not UTF-8, does not parse, or holds anything but a
            docstring and ``gene = literal`` assignments (naming the line and construct);
            or if the genome does not fit the gene space (naming the gene).
    """
    if isinstance(source, str):
        try:
            source = source.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates
            raise InvalidAgentCode(f"agent code is not valid UTF-8 text: {exc}") from exc
    size = len(source)
    if size > max_bytes:
        raise ConstraintViolation(
            f"agent code is {size} bytes, over the {max_bytes}-byte memory limit",
            details={"reason": "code too large", "size_bytes": size, "limit_bytes": max_bytes},
        )
    try:
        text = source.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidAgentCode(f"agent code is not valid UTF-8: {exc}") from exc
    try:
        tree = ast.parse(text, mode="exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise InvalidAgentCode(f"agent code does not parse: {exc}") from exc

    genome: dict[str, Any] = {}
    for index, node in enumerate(tree.body):
        if index == 0 and _is_docstring(node):
            continue
        if not isinstance(node, ast.Assign):
            raise _refuse(node, f"a {type(node).__name__} statement")
        if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
            raise _refuse(node, "an assignment to something other than a single name")
        name = node.targets[0].id
        if name in genome:
            raise _refuse(node, f"a second assignment to {name!r}")
        genome[name] = _literal(node.value)
    try:
        return space.encode(genome)
    except InvalidParameters as exc:
        raise InvalidAgentCode(
            f"agent code states an invalid genome: {exc}", details=exc.details
        ) from exc


def _is_docstring(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def _literal(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float | str | bool):
        return node.value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub | ast.UAdd)
        and isinstance(node.operand, ast.Constant)
        and isinstance(node.operand.value, int | float)
        and not isinstance(node.operand.value, bool)
    ):
        value = node.operand.value
        return -value if isinstance(node.op, ast.USub) else value
    raise _refuse(node, f"a {type(node).__name__} expression (only literals are allowed)")


def _refuse(node: ast.AST, what: str) -> InvalidAgentCode:
    line = getattr(node, "lineno", "?")
    return InvalidAgentCode(
        f"agent code line {line}: {what}; agent code may only assign literals to gene names",
        details={"line": line, "construct": type(node).__name__},
    )
