"""Experiments beyond one run: the ANC measured on clips whose parts are known (``denoising``,
the ANC chapter), System 5's noise study (``noise_study``)."""
