"""Documents written as YAML (the one place besides the readers that imports yaml)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def yaml_text(doc: Mapping[str, Any]) -> str:
    """A document as block YAML, keys in their order, Unicode kept."""
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(dict(doc), Dumper=dumper, sort_keys=False, allow_unicode=True)
