"""The one exception type the CLI turns into a one-line message instead of a traceback."""


class SFTError(Exception):
    """A problem the user can fix: the message says what is wrong and what to do."""


class DataError(SFTError):
    """Invalid input data; `problems` lists every problem found, one line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))
