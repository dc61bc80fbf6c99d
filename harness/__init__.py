"""Reproduction harness for Segmenter (arXiv 2105.05633) on OpenMMLab.

Data flows one way: row spec -> job request -> launch -> job -> track -> collect -> report. The
packages are layers, each importing only the ones below it: docs/design.md describes them,
``tests/test_structure.py`` holds the rule.
"""
