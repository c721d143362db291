"""dsgan-cli: learn how real low-quality photos are degraded (DSGAN) and apply it to folders."""

__version__ = "0.1.0"
