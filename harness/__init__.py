"""Reproduction harness for Segmenter (arXiv 2105.05633) on OpenMMLab.

Data flows one way: row spec (``spec``) -> job config (``profiles``) -> launch (``launch``,
``job``) -> track (``tracking``) -> collect (``collect``) -> report (``report``).
"""
