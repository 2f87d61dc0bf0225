"""sdg: InstructLab-style taxonomies to synthetic training data, on a laptop or a Slurm cluster."""

__version__ = "0.1.0"
