"""Metrics: FID/KID, power spectra, the paired figures and the downstream SR check."""
