"""Event datasets (tonic underneath), framing into T bins, RCS and test windows, splits."""

from asa_deploy.data.cache import CacheSetting
from asa_deploy.data.datasets import (
    EventDataset,
    RecordingSource,
    check_class_names,
    open_dataset,
)
from asa_deploy.data.events import EVENT_DTYPE, as_events, check_events
from asa_deploy.data.framing import (
    FramedDataset,
    FrameSpec,
    check_input_shape,
    frame_events,
    frame_shape,
    majority_vote,
    predict_classes,
    rcs_window_start,
    recording_accuracy,
    test_window_starts,
    whole_recording_spec,
)
from asa_deploy.data.readers import read_recording
from asa_deploy.data.splits import stratified_split

__all__ = [
    "EVENT_DTYPE",
    "CacheSetting",
    "EventDataset",
    "FrameSpec",
    "FramedDataset",
    "RecordingSource",
    "as_events",
    "check_class_names",
    "check_events",
    "check_input_shape",
    "frame_events",
    "frame_shape",
    "majority_vote",
    "open_dataset",
    "predict_classes",
    "rcs_window_start",
    "read_recording",
    "recording_accuracy",
    "stratified_split",
    "test_window_starts",
    "whole_recording_spec",
]
