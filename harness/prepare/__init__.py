"""Preparing jobs, in the user's shell and in the job process before the Runner starts: the
table specs, the job request, the job config built from it, the row's model, the plan."""
