"""``python -m asd_utils.training RUN.yaml [--resume]`` (or under ``accelerate launch``): one
training run from its run file (see :mod:`asd_utils.training`)."""

from asd_utils.training import main

main()
