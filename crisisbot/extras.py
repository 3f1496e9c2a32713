"""Which optional extra of crisisbot installs a missing module, so an error can say what to install.

A site that only emails through SMTP and takes webhooks installs the core; each integration
that brings heavy or specialised packages is an extra in pyproject.toml (`pip install
'crisisbot[teams]'`). When an import fails, the missing module's name is all Python tells
us, and an uninstalled package has no metadata to ask, so the import names of each extra's
packages are written down here (tests/unit/test_extras.py keeps this table and
pyproject.toml's extras in step).
"""

from __future__ import annotations

import importlib.util

from crisisbot.errors import MissingExtra

EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "teams": ("msgraph", "msgraph_core", "azure", "msal", "kiota_abstractions", "kiota_http",
              "kiota_authentication_azure", "kiota_serialization_json", "kiota_serialization_text",
              "kiota_serialization_form", "kiota_serialization_multipart"),
    "modbus": ("pymodbus", "serial"),
    "sia": ("pysiaalarm", "fastcrc"),
    "mqtt": ("aiomqtt", "paho"),
    "cameras": ("onvif", "zeep"),
    "blur": ("cv2", "numpy"),
    "rtsp": ("av",),
    "pdf": ("weasyprint",),
}
_EXTRA_OF = {module: extra for extra, modules in EXTRA_MODULES.items() for module in modules}


def extra_of(error: ImportError) -> str | None:
    """The extra that installs the module `error` found missing, if it is one of ours."""
    name = error.name if isinstance(error, ModuleNotFoundError) else None
    return _EXTRA_OF.get(name.partition(".")[0]) if name else None


def installed(extra: str) -> bool:
    """Whether the packages of `extra` can be imported (found without importing them: cv2 alone costs 0.5 s)."""
    try:  # the first module is the extra's own package; the others come with it
        return importlib.util.find_spec(EXTRA_MODULES[extra][0]) is not None  # KeyError: add it to the table
    except (ImportError, ValueError):
        return False


def require(extra: str, what: str) -> None:
    """Raise MissingExtra naming `extra` when its packages are absent."""
    if not installed(extra):
        raise MissingExtra(what, extra, EXTRA_MODULES[extra][0])
