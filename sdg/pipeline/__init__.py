"""Generation pipelines as data: YAML lists of blocks, prompt files, tolerant parsers."""
