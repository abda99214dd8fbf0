"""SurgUn core: concept erasure by competition, in pure torch.

Nothing in this package imports ComfyUI. Functions take plain modules,
tensors and callbacks so they can be tested on CPU with tiny models.
"""

__version__ = "0.1.0"

from .errors import SurgUnError, NonFiniteLossError  # noqa: F401
from .objective import CompetitionWeights, competition_loss  # noqa: F401
from .selection import match_names, select_trainable, parse_pattern_text  # noqa: F401
from .train import TrainConfig, ConceptData, TrainResult, train_competition  # noqa: F401
from .weights import ErasedWeights, delta_key, extract_deltas, save_erased_weights, load_erased_weights  # noqa: F401
