"""What a reader sees: the notebooks run by papermill (``pipeline``), the book staged and built
(``book``), the figures (``plots``) and the chapters' analyses (``analysis``)."""
