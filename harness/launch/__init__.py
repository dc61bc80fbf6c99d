"""Launching jobs: the launchers (local, torchrun, SLURM), the checks before any job starts,
and the job process each launcher starts."""
