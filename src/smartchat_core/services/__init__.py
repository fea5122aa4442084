"""The domain services, one module per seed service, over the ports only."""

from ._base import Ports
from .executives import ExecutiveService
from .intake import IntakeService
from .listing import ListingService
from .monitors import MonitorService
from .resolution import ResolutionService
from .sla import SlaAlert, SlaService
from .tagging import TaggingService

__all__ = [
    "ExecutiveService",
    "IntakeService",
    "ListingService",
    "MonitorService",
    "Ports",
    "ResolutionService",
    "SlaAlert",
    "SlaService",
    "TaggingService",
]
