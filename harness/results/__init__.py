"""Reading results from the job folders on disk: collect them into tables, write the reports."""
