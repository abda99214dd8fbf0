"""Errors raised by the core. Messages say what went wrong, the value received and the fix."""


class SurgUnError(ValueError):
    """A user-facing error: bad input, unsupported model, unreadable file."""


class NonFiniteLossError(SurgUnError):
    """The training loss became NaN or infinite; nothing is saved."""

    def __init__(self, step: int, parts: dict):
        shown = ", ".join(f"{k}={v:.4g}" for k, v in parts.items())
        super().__init__(
            f"[SurgUn] the loss became non-finite at step {step} ({shown}). Nothing was saved and the "
            "input model is untouched. Lower learning_rate (try 10x smaller), keep ascent_cap above 0, "
            "or keep max_grad_norm above 0."
        )
        self.step = step
        self.parts = parts


def short(text: str, limit: int = 60) -> str:
    """A user's text quoted in an error: its first ``limit`` characters, and how long it was."""
    text = str(text)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


def require_number(name: str, value, lo: float | None = None, hi: float | None = None, fix: str = "") -> None:
    """``value`` is a finite number within ``[lo, hi]`` (NaN and infinities refused, whatever the route)."""
    import math

    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (lo is None or value >= lo) and (hi is None or value <= hi)
    if not ok:
        span = f" in [{lo:g}, {hi:g}]" if lo is not None and hi is not None else (f" >= {lo:g}" if lo is not None else "")
        raise SurgUnError(f"[SurgUn] {name} must be a finite number{span}, got {short(value, 30)}." + (f" {fix}" if fix else ""))
