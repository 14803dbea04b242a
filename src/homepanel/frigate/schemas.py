"""Frigate's config, events and stats, read leniently, and the spec's shapes we answer with.

0.14+ drops every null key from `/api/config` and some cameras have no configured size, so every
field is optional on the way in. Events moved their score into `data` in 0.12; old rows keep a
top-level `top_score`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Upstream(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Detect(_Upstream):
    enabled: bool | None = None
    fps: int | None = None
    width: int | None = None
    height: int | None = None


class _Switch(_Upstream):
    enabled: bool | None = None


class FrigateCameraConfig(_Upstream):
    enabled: bool = True
    detect: _Detect = Field(default_factory=_Detect)
    record: _Switch = Field(default_factory=_Switch)
    snapshots: _Switch = Field(default_factory=_Switch)


class FrigateConfig(_Upstream):
    cameras: dict[str, FrigateCameraConfig] = Field(default_factory=dict)


class FrigateEvent(_Upstream):
    id: str
    camera: str
    label: str
    start_time: float
    end_time: float | None = None
    has_snapshot: bool = False
    has_clip: bool = False
    zones: list[str] = Field(default_factory=list)
    top_score: float | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @property
    def score(self) -> float | None:
        """`data.top_score`, else `data.score`, else the legacy top-level `top_score`."""
        for value in (self.data.get("top_score"), self.data.get("score"), self.top_score):
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
        return None


class _CameraStats(_Upstream):
    camera_fps: float = 0.0
    detection_fps: float = 0.0
    process_fps: float = 0.0
    skipped_fps: float = 0.0


class _DetectorStats(_Upstream):
    inference_speed: float = 0.0
    detection_start: float = 0.0


class _ServiceStats(_Upstream):
    uptime: int = 0
    version: str = ""


class FrigateStats(_Upstream):
    service: _ServiceStats = Field(default_factory=_ServiceStats)
    cameras: dict[str, _CameraStats] = Field(default_factory=dict)
    detectors: dict[str, _DetectorStats] = Field(default_factory=dict)


# --- our API -------------------------------------------------------------------------------


class Camera(BaseModel):
    name: str
    enabled: bool
    fps: int | None
    width: int | None
    height: int | None
    detect_enabled: bool
    record_enabled: bool
    snapshots_enabled: bool

    @classmethod
    def of(cls, name: str, config: FrigateCameraConfig) -> Camera:
        # Frigate's own defaults when a key is absent: detect on, record and snapshots off.
        return cls(
            name=name,
            enabled=config.enabled,
            fps=config.detect.fps,
            width=config.detect.width,
            height=config.detect.height,
            detect_enabled=config.detect.enabled is not False,
            record_enabled=bool(config.record.enabled),
            snapshots_enabled=bool(config.snapshots.enabled),
        )


class CameraList(BaseModel):
    cameras: list[Camera]


class Event(BaseModel):
    id: str
    camera: str
    label: str
    score: float | None
    start_time: float
    end_time: float | None = Field(description="null while the event is still in progress")
    has_snapshot: bool
    has_clip: bool
    zones: list[str]

    @classmethod
    def of(cls, event: FrigateEvent) -> Event:
        return cls(score=event.score, **event.model_dump(exclude={"top_score", "data"}))


class EventList(BaseModel):
    events: list[Event]


class CameraStats(BaseModel):
    fps: float
    detection_fps: float
    process_fps: float
    skipped_fps: float


class DetectorStats(BaseModel):
    inference_speed: float = Field(description="milliseconds")
    detection_start: float


class ServiceStats(BaseModel):
    uptime: int
    version: str


class Stats(BaseModel):
    service: ServiceStats
    cameras: dict[str, CameraStats]
    detectors: dict[str, DetectorStats]

    @classmethod
    def of(cls, stats: FrigateStats) -> Stats:
        return cls(
            service=ServiceStats(**stats.service.model_dump()),
            cameras={
                name: CameraStats(
                    fps=camera.camera_fps,
                    detection_fps=camera.detection_fps,
                    process_fps=camera.process_fps,
                    skipped_fps=camera.skipped_fps,
                )
                for name, camera in stats.cameras.items()
            },
            detectors={
                name: DetectorStats(**detector.model_dump())
                for name, detector in stats.detectors.items()
            },
        )
