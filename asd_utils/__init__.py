"""asd_utils: the work behind the XJU DCASE 2026 Task 2 notebooks.

One folder per stage a clip passes through, bottom to top; a layer imports only the layers
below it (``.importlinter``, checked by ``make test``), and ``config``, ``data``,
``evaluation``, ``submission`` and ``report.book`` load without torch:

    cli.py            the ``asd`` command: one sub-command per stage
    report/           pipeline (papermill over the notebooks), book, plots, analysis
    studies/          denoising (the ANC measured), noise_study (System 5 against the SNR)
    detection.py      ``asd detect``: new recordings scored by a finished run
    stages.py         every stage, one function each: prepare, baseline, train, embed, score,
                      training_free, ensemble, evaluate, package
    submission/       the DCASE package: meta files, ground truth, the checks
    systems/          how each system is made: build and run folder of the fine-tuned ones,
                      baseline (the autoencoder), training_free (Systems 0 and 6, the
                      log-mel floor), ensemble
    scoring/          embeddings and their cache, the back ends (KNN and others)
    training/         the training loop, checkpoints and resume (``asd train``)
    models/           EAT, BEATs, the frozen encoder, the fusion modules, heads, losses, the
                      autoencoder, precision
    frontends/        fbank and log-mel, SpecAugment, the ANC, channel views
    data/             DCASE names, the index and its checks, audio I/O; synth (the synthetic set)
    evaluation/       metrics, the official file format, thresholds, Table 2
    config/           profiles (load, extend, freeze, paths) and their schema
    registry.py       the systems: one table every module reads
    files.py runs.py  atomic writes; the output root's lock and status
    errors.py         one-line user errors, -q / -v, interruptions
"""

__version__ = "0.1.0"

import warnings as _warnings

# tqdm.auto (imported by libraries this package uses) warns in every notebook kernel that
# ipywidgets is missing; the text progress bars it falls back to are what a headless papermill
# run can show, so the warning is noise a user cannot act on.
_warnings.filterwarnings("ignore", message="IProgress not found", module="tqdm")
