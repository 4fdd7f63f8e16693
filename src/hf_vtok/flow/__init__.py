"""Flow-matching samplers shared by families."""

from .scheduling_sit import SiTFlowScheduler, score_from_velocity

__all__ = ["SiTFlowScheduler", "score_from_velocity"]
