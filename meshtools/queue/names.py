"""Every Redis name the mesh uses, in one place (listed in meshtools(7)).

The mission fixes `tasks:queue:default`, `tasks:queue:<role>` and `tasks:results`; a
namespace (`--namespace` / $MESH_NAMESPACE) prefixes them all so several meshes can share
one Redis.
"""

import os
from dataclasses import dataclass

from ..core.ids import validate_name

GROUP = "mesh"  # the consumer group every queue-drain worker joins
DEFAULT_QUEUE = "default"


@dataclass(frozen=True)
class Names:
    namespace: str = ""

    @classmethod
    def from_env(cls, namespace: str | None = None) -> "Names":
        value = namespace if namespace is not None else os.environ.get("MESH_NAMESPACE", "")
        return cls(validate_name(value, "namespace") if value else "")

    def key(self, name: str) -> str:
        return f"{self.namespace}:{name}" if self.namespace else name

    def queue(self, name: str = DEFAULT_QUEUE) -> str:
        return self.key(f"tasks:queue:{validate_name(name, 'queue name')}")

    @property
    def queue_prefix(self) -> str:
        return self.key("tasks:queue:")

    @property
    def results(self) -> str:
        return self.key("tasks:results")

    @property
    def dead(self) -> str:
        return self.key("tasks:dead")

    @property
    def index(self) -> str:
        """Hash: task id -> its state (queued, done, dead) — dedupe and exactly-once results."""
        return self.key("tasks:index")

    @property
    def attempts(self) -> str:
        """Hash: task id -> how many times a worker started it."""
        return self.key("tasks:attempts")

    @property
    def workers(self) -> str:
        """Hash: consumer name -> its heartbeat record."""
        return self.key("tasks:workers")

    @property
    def events(self) -> str:
        return self.key("mesh:events")

    @property
    def events_position(self) -> str:
        """String: how far MESH_HOME/events.jsonl has been copied into the events stream
        ("<file>:<offset>", moved with each copy; see queue.mirror)."""
        return self.key("mesh:events:forwarded")

    @property
    def paused(self) -> str:
        """String with a TTL: dispatch is paused until it expires (usage limits)."""
        return self.key("mesh:paused")

    def spend(self, day: str) -> str:
        """String (float): dollars the mesh's agents spent on that UTC day (YYYY-MM-DD),
        INCRBYFLOAT after each agent task, expiring after two days."""
        return self.key(f"mesh:spend:{day}")

    def spend_by_role(self, day: str) -> str:
        """Hash role -> dollars its agents spent on that UTC day (the dash's COST column),
        counted with spend() and expiring with it."""
        return self.key(f"mesh:spend:{day}:roles")

    @property
    def resumed(self) -> str:
        """String: the `since` of the last pause whose end was announced (mesh.resumed is
        emitted once per pause, however many workers were waiting)."""
        return self.key("mesh:resumed")
