"""A small generic actor runtime on trio.

Mailboxes, one-shot replies, ``ask``, a supervisor with restart intensity, and
a registry that activates actors on their first message and passivates them
when idle.  It knows nothing about caching.
"""

from ._mailbox import Mailbox, MailboxClosed, MailboxFull, MailboxStatistics
from ._registry import Actor, Registry, RegistryStatistics, ask
from ._reply import Reply, ReplyAlreadySet
from ._supervisor import RestartIntensity, Supervisor, SupervisorStatistics

__all__ = [
    "Actor",
    "Mailbox",
    "MailboxClosed",
    "MailboxFull",
    "MailboxStatistics",
    "Registry",
    "RegistryStatistics",
    "Reply",
    "ReplyAlreadySet",
    "RestartIntensity",
    "Supervisor",
    "SupervisorStatistics",
    "ask",
]
