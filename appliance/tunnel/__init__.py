"""The reverse ssh tunnel to a hub the user controls, and the token-guarded listener it forwards to."""

from .lifecycle import tunnel_context
from .remote_listener import remote_listener_context

__all__ = ["remote_listener_context", "tunnel_context"]
