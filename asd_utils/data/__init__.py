"""Index a DCASE Task 2 tree, parse clip names, read and write WAV clips, with clear errors.

A clip table (:func:`index_dataset`) has one row per WAV file; audio is read as float32 arrays of
shape ``(channels, samples)``. DCASE 2026 clips are stereo (channel 0 = near microphone, channel
1 = far microphone); 2020–2025 clips are mono, and their one channel equals the 2026 near mic.
A tree is walked as its edition lays it out (:mod:`asd_utils.data.editions`: folders, names,
channel map). This package knows nothing of features. By job: names and trees
(:mod:`~asd_utils.data.dcase`), WAV files (:mod:`~asd_utils.data.audio`), the checks of every
clip (:mod:`~asd_utils.data.checks`) and the clip table (:mod:`~asd_utils.data.manifest`); the
names other modules use are re-exported here.
"""

from asd_utils.data.audio import _open_checked, read_audio, read_clips, write_wav
from asd_utils.data.checks import (
    FLOAT_SUBTYPES,
    MIN_SECONDS,
    SAMPLE_CACHE_VERSION,
    SCAN_BLOCK_FRAMES,
    SCAN_FIRST_FRAMES,
    _check_header,
    check_machine_types,
    sample_cache_path,
    scan_samples,
)
from asd_utils.data.dcase import (
    COLUMNS,
    SAMPLE_RATE,
    SPLITS,
    DataError,
    DataWarning,
    clip_paths,
    machine_types,
    parse_attributes,
    parse_file_name,
)
from asd_utils.data.manifest import (
    attribute_classes,
    clip_fingerprint,
    describe_channels,
    edition_of,
    index_dataset,
    prepare_data,
)

__all__ = [
    "COLUMNS",
    "FLOAT_SUBTYPES",
    "MIN_SECONDS",
    "SAMPLE_CACHE_VERSION",
    "SAMPLE_RATE",
    "SCAN_BLOCK_FRAMES",
    "SCAN_FIRST_FRAMES",
    "SPLITS",
    "DataError",
    "DataWarning",
    "_check_header",  # the stages' header check of one clip (stages.py)
    "_open_checked",
    "attribute_classes",
    "check_machine_types",
    "clip_fingerprint",
    "clip_paths",
    "describe_channels",
    "edition_of",
    "index_dataset",
    "machine_types",
    "parse_attributes",
    "parse_file_name",
    "prepare_data",
    "read_audio",
    "read_clips",
    "sample_cache_path",
    "scan_samples",
    "write_wav",
]
