"""The DCASE 2026 Task 2 submission package, by job: checking a package
(:mod:`~asd_utils.submission.check`), the dev ground truth for the official evaluator
(:mod:`~asd_utils.submission.ground_truth`), the pre-filled meta file
(:mod:`~asd_utils.submission.meta`), writing the package (:mod:`~asd_utils.submission.package`,
whose docstring shows its layout); the command line is ``asd package`` (``--check`` checks a
package). The names other modules use are re-exported here.
"""

from asd_utils.evaluation.official import SubmissionError
from asd_utils.submission.check import (
    MAX_SYSTEMS,
    check_folder,
    check_package,
    meta_notes,
    placeholders,
    read_meta,
    system_folders,
)
from asd_utils.submission.ground_truth import (
    GROUND_TRUTH_DIRS,
    evaluator_command,
    write_ground_truth,
)
from asd_utils.submission.meta import (
    DESCRIPTION_FIELDS,
    FILL_IN,
    build_meta,
    development_results,
    meta_text,
)
from asd_utils.submission.package import (
    DEFAULT_LABEL,
    DEFAULT_SYSTEMS,
    choose_systems,
    write_package,
)

__all__ = [
    "DEFAULT_LABEL",
    "DEFAULT_SYSTEMS",
    "DESCRIPTION_FIELDS",
    "FILL_IN",
    "GROUND_TRUTH_DIRS",
    "MAX_SYSTEMS",
    "SubmissionError",
    "build_meta",
    "check_folder",
    "check_package",
    "choose_systems",
    "development_results",
    "evaluator_command",
    "meta_notes",
    "meta_text",
    "placeholders",
    "read_meta",
    "system_folders",
    "write_ground_truth",
    "write_package",
]
