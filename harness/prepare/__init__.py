"""Building a job, in the user's shell and in the job process before the Runner starts: the
mmengine config of a job request, the row's model, and the patch mmengine needs first."""
