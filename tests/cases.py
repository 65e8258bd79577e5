"""The (D, C) cases every check runs: paper defaults and the odd corners."""

PAPER = [(54, 10), (108, 20), (162, 30)]
ODD = [
    (54, 1),  # C = 1: one target takes every other token
    (500, 76),  # D + C = N - 1 on the 577-token CLIP tower
    (500, 75),  # D + C = N - 1 on the 576-token SigLIP tower
]


def cases_for(family: str) -> list[tuple[int, int]]:
    """Paper defaults plus the odd cases that fit the family's token count."""
    tokens = 577 if family == "clip-llama" else 576
    return PAPER + [(d, c) for d, c in ODD if d + c < tokens]
