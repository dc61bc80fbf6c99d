"""Reproduction harness for Segmenter (arXiv 2105.05633) on OpenMMLab.

Data flows one way: row spec -> job request -> launch -> job -> track -> collect -> report.
The packages are layers, each importing only the ones below it (``tests/test_structure.py``
holds the rule):

- ``core``: specs, the job request, the job folder's layout and state, errors, the atomic
  write, profile constants; imports neither torch nor mmengine
- ``models``: modules registered in mmseg's registries
- ``prepare``: the job's mmengine config and model, built from a request
- ``runtime`` (inside mmengine's Runner), ``assets`` (data, weights, converters), ``results``
  (collect and report)
- ``launch``: launchers, preflight checks, the job process
- ``measure``: bench, rehearsals, plan
- ``cli``: one module per command
"""
