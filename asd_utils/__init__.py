"""asd_utils: the work behind the XJU DCASE 2026 Task 2 notebooks.

Modules, in the order a clip flows through them (each calls only the ones before it):
``data`` (index and read a DCASE tree), ``synth`` (make one), ``features``, ``anc``,
``models``, ``training``, ``scoring``, ``training_free`` (System 0, the log-mel floor),
``metrics``, ``submission``, ``plots``; ``pipeline`` drives
the notebooks; ``config`` (with the schema in ``profile_schema``) reads and checks profiles.
"""

__version__ = "0.1.0"

import warnings as _warnings

# tqdm.auto (imported by libraries this package uses) warns in every notebook kernel that
# ipywidgets is missing; the text progress bars it falls back to are what a headless papermill
# run can show, so the warning is noise a user cannot act on.
_warnings.filterwarnings("ignore", message="IProgress not found", module="tqdm")
