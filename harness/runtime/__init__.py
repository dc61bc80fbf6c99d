"""Code that runs inside mmengine's Runner, registered in mmengine's and mmseg's registries.

The job config's ``custom_imports`` names this package (and ``harness.models``); it imports
nothing of the launch or results stages.
"""
from . import checkpointing, metrics, precision, preempt, wandb_backend  # noqa: F401
