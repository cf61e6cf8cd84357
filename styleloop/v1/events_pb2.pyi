import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from styleloop.v1 import common_pb2 as _common_pb2
from styleloop.v1 import llm_pb2 as _llm_pb2
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

class ChatTurnMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class ChatCard(_message.Message):
    __slots__ = ("number", "item", "score", "similarity")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    number: int
    item: _common_pb2.Item
    score: float
    similarity: float
    def __init__(self, number: _Optional[int] = ..., item: _Optional[_Union[_common_pb2.Item, _Mapping]] = ..., score: _Optional[float] = ..., similarity: _Optional[float] = ...) -> None: ...

class ChatConstraint(_message.Message):
    __slots__ = ("field", "values")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    field: str
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, field: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ...) -> None: ...

class ChatTurnEvent(_message.Message):
    __slots__ = ("event_id", "answer_id", "user_id", "conversation_id", "request_id", "event_time", "conversation", "prompt", "cards", "text", "cited_item_ids", "finish_reason", "adapter_id", "model_id", "model_version", "constraints", "missing", "prompt_tokens", "completion_tokens")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ANSWER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    CARDS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CITED_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    answer_id: str
    user_id: str
    conversation_id: str
    request_id: str
    event_time: _timestamp_pb2.Timestamp
    conversation: _containers.RepeatedCompositeFieldContainer[ChatTurnMessage]
    prompt: _containers.RepeatedCompositeFieldContainer[ChatTurnMessage]
    cards: _containers.RepeatedCompositeFieldContainer[ChatCard]
    text: str
    cited_item_ids: _containers.RepeatedScalarFieldContainer[str]
    finish_reason: _llm_pb2.FinishReason
    adapter_id: str
    model_id: str
    model_version: str
    constraints: _containers.RepeatedCompositeFieldContainer[ChatConstraint]
    missing: _containers.RepeatedScalarFieldContainer[str]
    prompt_tokens: int
    completion_tokens: int
    def __init__(self, event_id: _Optional[str] = ..., answer_id: _Optional[str] = ..., user_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., request_id: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., conversation: _Optional[_Iterable[_Union[ChatTurnMessage, _Mapping]]] = ..., prompt: _Optional[_Iterable[_Union[ChatTurnMessage, _Mapping]]] = ..., cards: _Optional[_Iterable[_Union[ChatCard, _Mapping]]] = ..., text: _Optional[str] = ..., cited_item_ids: _Optional[_Iterable[str]] = ..., finish_reason: _Optional[_Union[_llm_pb2.FinishReason, str]] = ..., adapter_id: _Optional[str] = ..., model_id: _Optional[str] = ..., model_version: _Optional[str] = ..., constraints: _Optional[_Iterable[_Union[ChatConstraint, _Mapping]]] = ..., missing: _Optional[_Iterable[str]] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ...) -> None: ...

class ModelRoundEvent(_message.Message):
    __slots__ = ("event_id", "round_id", "parent_adapter_id", "published", "adapter_id", "reason", "base_model_id", "base_model_version", "metrics", "pairs_used", "event_time")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    PAIRS_USED_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    round_id: str
    parent_adapter_id: str
    published: bool
    adapter_id: str
    reason: str
    base_model_id: str
    base_model_version: str
    metrics: _containers.ScalarMap[str, float]
    pairs_used: int
    event_time: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[str] = ..., round_id: _Optional[str] = ..., parent_adapter_id: _Optional[str] = ..., published: _Optional[bool] = ..., adapter_id: _Optional[str] = ..., reason: _Optional[str] = ..., base_model_id: _Optional[str] = ..., base_model_version: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., pairs_used: _Optional[int] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
