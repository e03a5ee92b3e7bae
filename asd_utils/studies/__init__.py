"""Experiments beyond one run: System 5's noise study (``noise_study``)."""
