"""Reproduction harness for Segmenter (arXiv 2105.05633) on OpenMMLab.

Data flows one way, one package a stage, named by where its code runs:
row spec and job request (``prepare``) -> launch (``launch``: launchers, the job process) ->
job inside mmengine's Runner (``runtime``, ``models``) -> collect and report (``results``).
``assets`` prepares what jobs read (data, weights); ``layout`` names every file of a job
folder; ``cli`` is the command line; ``bench`` times our models against stock mmseg;
``rehearse`` runs each row's full-profile job for a few iterations at its real size.
"""
