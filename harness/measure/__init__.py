"""Measurements of the rows and the machine, on top of every other stage: the speed benchmark
against stock mmseg (``bench``), each row's full-profile job rehearsed at its real size
(``rehearse``) and the plan that estimates a table's cost from them (``plan``); the results are
versioned records in JSON with markdown rendered from them (``measurement_files``)."""
