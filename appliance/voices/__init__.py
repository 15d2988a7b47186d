"""Piper voices: their JSON configuration and where they are found."""
