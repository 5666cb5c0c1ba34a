"""What a notebook needs beyond tdevlab's runtime dependencies, checked up front."""

from __future__ import annotations

import importlib

__all__ = ["EXTRA_MODULES", "require"]

#: The modules each optional extra of ``pyproject.toml`` provides, as a notebook imports them.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "dask": ("dask", "dask.distributed"),
    "bench": ("deap", "pygad", "pymoo", "ribs"),
    "lineage": ("plotly", "anywidget"),
}


def require(extra: str, *modules: str, by: str = "this notebook") -> None:
    """Check that an optional extra is installed; fail with the command that installs it.

    Args:
        extra: The extra's name in ``pip install 'tdevlab[extra]'``.
        modules: The modules to import; by default those the extra provides
            (:data:`EXTRA_MODULES`), or the module named like the extra.
        by: Who needs it, for the message (``"notebook 03"``).

    Raises:
        ModuleNotFoundError: A module is missing. The message names who needs which extra
            and the ``pip install`` command; ``name`` is the missing module.
    """
    for module in modules or EXTRA_MODULES.get(extra, (extra,)):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(
                f"{by} needs the {extra} extra (module {exc.name!r} is not installed): "
                f"pip install 'tdevlab[{extra}]'",
                name=exc.name,
            ) from exc
