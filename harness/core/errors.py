"""The harness's errors: each message is one line that names the problem (a file, a row, a
value), never a command-line flag; the command line prints it and exits 2."""


class HarnessError(Exception):
    """Base of every error the harness reports as one line."""


class SpecError(HarnessError, ValueError):
    """A table spec, a row selection or a job request that cannot be used."""


class DataError(HarnessError, ValueError):
    """Defects of a dataset folder. The message is one line (the first defect, and how many
    more); ``defects`` lists the first ``MAX_LISTED``, ``count`` is how many were found."""
    MAX_LISTED = 20

    def __init__(self, defects: list[str], count: int | None = None):
        self.defects = list(defects[:self.MAX_LISTED])
        self.count = len(defects) if count is None else count
        more = f' (and {self.count - 1} more)' if self.count > 1 else ''
        super().__init__(f'{self.defects[0]}{more}')


class WeightsError(HarnessError, ValueError):
    """Pretrained weights or a checkpoint that cannot be downloaded, read or converted."""


class ConversionError(WeightsError):
    """A key the mapping does not know: the source is not the expected layout."""


class LaunchError(HarnessError):
    """A launch that cannot start: a launcher option, a missing tool, a device."""


class StateError(HarnessError):
    """A job folder or output whose state forbids the step (an existing file, a lock)."""


class DriftError(StateError):
    """A restart refused: the checkout builds the job's recipe, code or inputs differently
    from what the job started with (``--accept-drift`` goes on with what it started with)."""
