"""Outputs in InstructLab's layout: datasets, recipes, LAB phase files, manifest, quality report."""
