"""Running under systemd: readiness, status line, health-gated watchdog pings and journald logging.

The daemon needs two names: `systemd_context` (an aiohttp cleanup context, listed after the engine's)
and `log_handler` (the root logger's handler). Everything works the same without systemd, minus
notifications.
"""

from ..synthesis.workers import probe_executor
from .context import systemd_context
from .journal import log_handler
from .notify import SystemdNotifier
from .watchdog import WorkerProbe

__all__ = ["SystemdNotifier", "WorkerProbe", "log_handler", "probe_executor", "systemd_context"]
