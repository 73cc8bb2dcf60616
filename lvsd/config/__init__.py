"""Config: load a TOML or INI file (and its includes) into the frozen model.

``load(path)`` is the one entry point; the model's types live in
:mod:`lvsd.config.model`, the readers in :mod:`lvsd.config.toml` and
:mod:`lvsd.config.ini`, the validator in :mod:`lvsd.config.schema` over the value
converters of :mod:`lvsd.config.values`.
"""

from lvsd.config.loader import load, parse

__all__ = ["load", "parse"]
