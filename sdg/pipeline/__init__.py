"""Generation pipelines as data: YAML lists of blocks, prompt files, tolerant parsers.

`load_pipeline(name_or_dir, kind)` gives a `Pipeline` whose `run(row, ctx)` is the engine's `RunUnit`.
Names are resolved lazily so that `import sdg.pipeline.types` stays light.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "load_pipeline": "sdg.pipeline.loader",
    "Pipeline": "sdg.pipeline.pipeline",
    "Block": "sdg.pipeline.blocks",
    "register_block": "sdg.pipeline.blocks",
    "PARSERS": "sdg.pipeline.parsers",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sdg.pipeline' has no attribute {name!r}")
