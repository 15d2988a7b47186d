"""Running under systemd: readiness, status line, health-gated watchdog pings and journald logging.

The daemon needs two names: `systemd_context` (an aiohttp cleanup context, listed after the engine's)
and `log_handler` (the root logger's handler). Everything works the same without systemd, minus
notifications.
"""

from .context import systemd_context
from .journal import log_handler
from .notify import SystemdNotifier
from .watchdog import WorkerProbe

__all__ = ["SystemdNotifier", "WorkerProbe", "log_handler", "systemd_context"]
