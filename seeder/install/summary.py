"""What a run did, as one summary event."""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import log
from ..spec.lock import Lock


@dataclass
class Summary:
    files: int = 0
    downloaded: int = 0
    """Bytes from the origin."""
    from_cache: int = 0
    """Bytes read from remote caches."""
    reused: int = 0
    seconds: float = 0.0
    models: list[str] = field(default_factory=list)

    def emit(self) -> None:
        rate = self.downloaded / self.seconds if self.seconds > 0 else 0
        log.info("summary", models=len(self.models), files=self.files, bytes_downloaded=self.downloaded,
                 bytes_from_cache=self.from_cache or None, bytes_reused=self.reused, seconds=round(self.seconds, 3),
                 throughput=round(rate))

    @classmethod
    def warm(cls, lock: Lock) -> Summary:
        return cls(files=sum(len(m.files) for m in lock.models), reused=sum(m.total_size for m in lock.models),
                   models=[m.name for m in lock.models])
