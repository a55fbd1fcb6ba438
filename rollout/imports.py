"""The one helper that imports heavy optional packages and names the extra to install.

It lives in the lowest layer so that ``rollout``, ``critic`` and ``envs`` can all use it without
breaking the import direction of DESIGN.md.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ImportError):
    """An optional package is missing; the message names the ``viscritic`` extra that installs it."""


def require_package(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra to install.

    Args:
        module: the importable name, e.g. ``"robosuite"``.
        extra: the ``viscritic`` extra that provides it, e.g. ``"sim"``.
        purpose: what needs it, for the message, e.g. ``"the robosuite task 'Lift'"``.

    Example:
        >>> np = require_package("numpy", "core", "the example")
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise MissingExtraError(
            f"{purpose} needs the optional package {module!r}, which is not installed "
            f"({exc}). Install it with: pip install -e '.[{extra}]' (in the repository's root)"
        ) from exc
    except ImportError as exc:
        said = str(exc)
        if "cannot open shared object file" in said or ("GLIBC" in said and "not found" in said):
            # a system library it loads is missing: pip cannot help (the pip line was given, and
            # fixed nothing); an undefined symbol is two pip packages that do not fit (below)
            raise MissingExtraError(
                f"{purpose} needs the optional package {module!r}, which is installed and does "
                f"not import ({exc}): a system library it loads is missing. On Debian/Ubuntu "
                "`bash scripts/install.sh` installs those the project needs (robosuite's OpenCV: "
                "libgl1 libglib2.0-0)"
            ) from exc
        raise MissingExtraError(  # installed packages that do not fit each other
            f"{purpose} needs the optional package {module!r}, which is installed and does not "
            f"import ({exc}). Reinstall it with: pip install -e '.[{extra}]' (in the repository's "
            "root)"
        ) from exc
