"""What a chapter needs of its notebook beyond the package's stages: :func:`glue`, MyST-NB's
``glue`` that also prints what it glued when the notebook runs interactively (JupyterLab), where
a ``{glue:text}`` role in the chapter's text shows no value.

A notebook runs for the book when an ``asd`` command started its kernel (``asd report``: the
kernel inherits ``$ASD_LOG_LEVEL``, :func:`asd_utils.errors.configure_logging`); then the value
is glued only, and the built book shows it in the sentence that carries it.
"""

from __future__ import annotations

import os

from asd_utils import errors


def for_the_book() -> bool:
    """Whether an ``asd`` command runs this kernel (the book), not a person in JupyterLab."""
    return errors.LOG_LEVEL_ENV in os.environ


def glue(name: str, value, display: bool = False) -> None:
    """``myst_nb.glue(name, value, display)``; interactively also one printed line
    ``[name] value``, so a sentence's value is readable in JupyterLab."""
    from myst_nb import glue as myst_glue

    myst_glue(name, value, display=display)
    if not display and not for_the_book():
        print(f"[{name}] {value}")
