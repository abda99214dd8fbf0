"""Seeds derived from the user's seed (seed + offset) stay inside the range the nodes declare."""

SEED_SPAN = 2**64


def offset_seed(seed: int, offset: int) -> int:
    """``seed + offset`` wrapped into ``[0, 2**64)``: the nodes accept seeds up to 2**64 - 1 and
    torch's generators refuse anything larger. Below the wrap the value is unchanged."""
    return (seed + offset) % SEED_SPAN
