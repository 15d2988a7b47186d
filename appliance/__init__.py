"""A private, streaming text-to-speech appliance for RK3588 boards."""

__version__ = "0.1.0"
