"""Anomaly scores from embeddings: the embeddings of clips (:mod:`~asd_utils.scoring.embeddings`:
extraction, cache, files) and the scoring back ends (:mod:`~asd_utils.scoring.backends`: one
interface, a table keyed by name, typed options).
"""

from asd_utils.scoring.backends import (
    BACKENDS,
    KNN,
    Backend,
    as_taken,
    check,
    for_machine_types,
    knn_scores,
    make,
    score_system,
)
from asd_utils.scoring.embeddings import (
    EMBEDDED_CLIPS,
    EMBEDDING_VERSION,
    EMBEDDINGS,
    check_finite,
    embedding_cache_key,
    extract_embeddings,
    length_batches,
    load_array,
    load_embeddings,
    pad_clips,
    save_embeddings,
)

__all__ = [
    "BACKENDS",
    "as_taken",
    "EMBEDDED_CLIPS",
    "EMBEDDINGS",
    "EMBEDDING_VERSION",
    "KNN",
    "Backend",
    "check",
    "for_machine_types",
    "check_finite",
    "embedding_cache_key",
    "extract_embeddings",
    "knn_scores",
    "length_batches",
    "load_array",
    "load_embeddings",
    "make",
    "pad_clips",
    "save_embeddings",
    "score_system",
]
