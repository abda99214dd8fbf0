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
