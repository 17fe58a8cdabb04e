"""The contract between our daemon's Events/Subscribe and the clients that must not miss an event.

containerd's Subscribe sends nothing until the first event, so a client cannot know when its
subscription is in place, and an event published meanwhile is lost to it. Ours sends the
stream's headers as soon as the daemon's exchange has the subscriber, with this header in them
(supervisor/services/events.py); a client that awaits it (`client.events.subscribed()`,
dock/events.py) may then start what it watches (`dock run --rm` starts its task) without a race.
Other clients ignore the header.
"""

from __future__ import annotations

SUBSCRIBED_HEADER = "dockyard-subscribed"
