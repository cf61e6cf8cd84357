import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from styleloop.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeedbackSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEEDBACK_SOURCE_UNSPECIFIED: _ClassVar[FeedbackSource]
    FEEDBACK_SOURCE_SEARCH_BY_IMAGE: _ClassVar[FeedbackSource]
    FEEDBACK_SOURCE_SEARCH_BY_TEXT: _ClassVar[FeedbackSource]
    FEEDBACK_SOURCE_SIMILAR_ITEMS: _ClassVar[FeedbackSource]
    FEEDBACK_SOURCE_COMPLETE_OUTFIT: _ClassVar[FeedbackSource]
    FEEDBACK_SOURCE_RECOMMENDATIONS: _ClassVar[FeedbackSource]
    FEEDBACK_SOURCE_CHAT: _ClassVar[FeedbackSource]
    FEEDBACK_SOURCE_ITEM_PAGE: _ClassVar[FeedbackSource]
FEEDBACK_SOURCE_UNSPECIFIED: FeedbackSource
FEEDBACK_SOURCE_SEARCH_BY_IMAGE: FeedbackSource
FEEDBACK_SOURCE_SEARCH_BY_TEXT: FeedbackSource
FEEDBACK_SOURCE_SIMILAR_ITEMS: FeedbackSource
FEEDBACK_SOURCE_COMPLETE_OUTFIT: FeedbackSource
FEEDBACK_SOURCE_RECOMMENDATIONS: FeedbackSource
FEEDBACK_SOURCE_CHAT: FeedbackSource
FEEDBACK_SOURCE_ITEM_PAGE: FeedbackSource

class FeedbackContext(_message.Message):
    __slots__ = ("source", "query", "recommended_item_ids", "position", "answer_id", "adapter_id", "reason")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDED_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    ANSWER_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    source: FeedbackSource
    query: str
    recommended_item_ids: _containers.RepeatedScalarFieldContainer[str]
    position: int
    answer_id: str
    adapter_id: str
    reason: str
    def __init__(self, source: _Optional[_Union[FeedbackSource, str]] = ..., query: _Optional[str] = ..., recommended_item_ids: _Optional[_Iterable[str]] = ..., position: _Optional[int] = ..., answer_id: _Optional[str] = ..., adapter_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class FeedbackEvent(_message.Message):
    __slots__ = ("event_id", "user_id", "session_id", "request_id", "item_id", "kind", "event_time", "receive_time", "context")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_TIME_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: str
    session_id: str
    request_id: str
    item_id: str
    kind: _common_pb2.InteractionKind
    event_time: _timestamp_pb2.Timestamp
    receive_time: _timestamp_pb2.Timestamp
    context: FeedbackContext
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[str] = ..., session_id: _Optional[str] = ..., request_id: _Optional[str] = ..., item_id: _Optional[str] = ..., kind: _Optional[_Union[_common_pb2.InteractionKind, str]] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., receive_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., context: _Optional[_Union[FeedbackContext, _Mapping]] = ...) -> None: ...
