"""Where loss plugins come from (names only, no import of torch or of the losses): the
command line asks :func:`plugins_configured` before it pays for loading the loss registry.
The loading itself is :func:`contrastlab.losses.registry.load_plugins`."""

from __future__ import annotations

import importlib.metadata
import os

__all__ = ["PLUGIN_ENV", "PLUGIN_GROUP", "plugins_configured"]

#: the entry-point group of installed plugins: each entry point names a LossSpec, an iterable of
#: them, or a callable returning either (``[project.entry-points."contrastlab.losses"]``)
PLUGIN_GROUP = "contrastlab.losses"
#: modules to import before the first lookup (comma-separated); each registers its losses
PLUGIN_ENV = "CONTRASTLAB_PLUGINS"


def plugins_configured() -> bool:
    """Whether any plugin is named: ``$CONTRASTLAB_PLUGINS`` set, or an entry point installed."""
    if os.environ.get(PLUGIN_ENV, "").strip(","):
        return True
    return bool(importlib.metadata.entry_points(group=PLUGIN_GROUP))
