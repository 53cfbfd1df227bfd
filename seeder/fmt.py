"""Formatting for people."""


def human_bytes(n: float) -> str:
    if abs(n) < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if abs(n) < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} TiB"


def count(n: int, noun: str) -> str:
    """``1 file``, ``2 files``: for the nouns seeder counts, whose plural takes an s."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
