"""Code that runs inside mmengine's Runner, registered in mmengine's and mmseg's registries.

The job config's ``custom_imports`` names this package (and ``harness.models``); it imports
nothing of the launch or results stages.
"""
from . import (  # noqa: F401
               checkpointing,
               metrics,
               precision,
               preempt,
               progress,
               safe_resume,
               sampling,
               wandb_backend,
)

# mmseg's own tools load our checkpoints with torch's restricted unpickling too: allow-list the
# exact types mmengine stores as soon as a config's custom_imports loads this package
safe_resume.enable_safe_resume()
