"""Config composition: defaults, overrides, typed objects, typos rejected with the valid keys."""

from __future__ import annotations

import pytest

from sdg.config.compose import compose_config, to_object
from sdg.config.schema import SdgConfig
from sdg.errors import ConfigError


def test_defaults_follow_instructlab_locations(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    cfg = to_object(compose_config())
    assert isinstance(cfg, SdgConfig)
    assert cfg.taxonomy.path == str(tmp_path / "data" / "instructlab" / "taxonomy")
    assert cfg.taxonomy.base is None  # origin/main where it exists, else every leaf
    assert cfg.teacher.name == "smollm2-135m-cpu" and cfg.pipeline.name == "simple" and cfg.cluster.kind == "local"


def test_overrides_and_group_choices() -> None:
    cfg = to_object(compose_config(["taxonomy.base=empty", "teacher=endpoint", "pipeline=full",
                                    "taxonomy.documents.chunk_tokens=300"]))
    assert cfg.taxonomy.base == "empty" and cfg.teacher.backend == "endpoint" and cfg.pipeline.name == "full"
    assert cfg.taxonomy.documents.chunk_tokens == 300


@pytest.mark.parametrize("override, expected", [
    ("taxonomy.bse=main", "unknown config key 'taxonomy.bse': taxonomy accepts path, repository, base"),
    ("+taxonomy.extra=1", "unknown config key 'taxonomy.extra'"),
    ("taxonomy.documents.chunk=1", "taxonomy.documents accepts cache_dir, chunk_tokens, chunk_overlap_tokens"),
    ("nonsense=1", "<top level> accepts taxonomy, teacher, pipeline, cluster"),
    ("teacher=gpt-17", "unknown teacher 'gpt-17': choose one of"),
    ("taxonomy.max_file_bytes=lots", "could not be converted to Integer"),
])
def test_bad_overrides_are_config_errors(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        compose_config([override])
    assert expected in str(err.value)
    assert err.value.exit_code == 2
