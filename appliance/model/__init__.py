"""Piper voice models cut into stages: text encoder and durations, sampling, flow, HiFi-GAN decoder."""
