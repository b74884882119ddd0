"""The demo street's data files (``deploy/demo/*.json``) and the stable ids derived from them.

Each service seeds the part it owns; ids are derived from names, so the gateway's demo
merchant-staff account points at the merchant service's demo cinema without either importing
the other.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

DEMO_NAMESPACE = uuid.UUID("0b8f8f3e-5d0a-4a7e-9d43-6a1d5c3f2e10")


def demo_dir() -> Path:
    """Where the demo data files are (``GUANGMANG_DEMO_DIR`` overrides)."""
    return Path(os.environ.get("GUANGMANG_DEMO_DIR", Path(__file__).resolve().parent.parent / "deploy" / "demo"))


def load(name: str) -> Any:
    """Parse ``deploy/demo/<name>.json``."""
    return json.loads((demo_dir() / f"{name}.json").read_text(encoding="utf-8"))


def stable_id(kind: str, key: str) -> str:
    """The same UUID for the same (kind, key) in every service and every run."""
    return str(uuid.uuid5(DEMO_NAMESPACE, f"{kind}:{key}"))
