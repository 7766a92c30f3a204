"""mailwatch: every client email gets a human reply within the promised time."""

__version__ = "0.1.0"
