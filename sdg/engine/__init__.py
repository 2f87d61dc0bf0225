"""The async engine: plan units of work, run them against the teacher, journal, resume, progress."""
