"""Distractor sets by an explicit, deterministic algorithm (see :mod:`.select`)."""

from .cache import EmbeddingCache  # noqa: F401
from .pools import CUSTOM_TEMPLATE, KINDS, POOL_DIR, Pool, aliases_of, apply_template, load_alias_groups, load_pool  # noqa: F401
from .result import DistractorSet, DistractorSets, mean_pairwise_distance, mean_pairwise_distance_from  # noqa: F401
from .select import DistractorParams, admissible_mask, build_distractor_set, build_distractor_sets, farthest_point  # noqa: F401
