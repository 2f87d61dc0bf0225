"""Taxonomy handling: init/clone, diff, validation, leaves, knowledge documents and chunking."""
