"""Wall time as the end-to-end runs print it."""


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"
