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

class UpsertOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UPSERT_OUTCOME_UNSPECIFIED: _ClassVar[UpsertOutcome]
    UPSERT_OUTCOME_CREATED: _ClassVar[UpsertOutcome]
    UPSERT_OUTCOME_UPDATED: _ClassVar[UpsertOutcome]
    UPSERT_OUTCOME_UNCHANGED: _ClassVar[UpsertOutcome]
    UPSERT_OUTCOME_FAILED: _ClassVar[UpsertOutcome]
UPSERT_OUTCOME_UNSPECIFIED: UpsertOutcome
UPSERT_OUTCOME_CREATED: UpsertOutcome
UPSERT_OUTCOME_UPDATED: UpsertOutcome
UPSERT_OUTCOME_UNCHANGED: UpsertOutcome
UPSERT_OUTCOME_FAILED: UpsertOutcome

class UpsertItem(_message.Message):
    __slots__ = ("item", "image", "image_embedding", "caption_embedding", "embedding_model_version")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    CAPTION_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    item: _common_pb2.Item
    image: bytes
    image_embedding: _common_pb2.Embedding
    caption_embedding: _common_pb2.Embedding
    embedding_model_version: str
    def __init__(self, item: _Optional[_Union[_common_pb2.Item, _Mapping]] = ..., image: _Optional[bytes] = ..., image_embedding: _Optional[_Union[_common_pb2.Embedding, _Mapping]] = ..., caption_embedding: _Optional[_Union[_common_pb2.Embedding, _Mapping]] = ..., embedding_model_version: _Optional[str] = ...) -> None: ...

class UpsertItemsRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[UpsertItem]
    def __init__(self, items: _Optional[_Iterable[_Union[UpsertItem, _Mapping]]] = ...) -> None: ...

class UpsertItemResult(_message.Message):
    __slots__ = ("item_id", "outcome", "error")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    outcome: UpsertOutcome
    error: _common_pb2.ItemError
    def __init__(self, item_id: _Optional[str] = ..., outcome: _Optional[_Union[UpsertOutcome, str]] = ..., error: _Optional[_Union[_common_pb2.ItemError, _Mapping]] = ...) -> None: ...

class UpsertItemsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[UpsertItemResult]
    def __init__(self, results: _Optional[_Iterable[_Union[UpsertItemResult, _Mapping]]] = ...) -> None: ...

class DeleteItemsRequest(_message.Message):
    __slots__ = ("item_ids",)
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteItemsResponse(_message.Message):
    __slots__ = ("deleted_item_ids", "missing_item_ids")
    DELETED_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    MISSING_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    deleted_item_ids: _containers.RepeatedScalarFieldContainer[str]
    missing_item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, deleted_item_ids: _Optional[_Iterable[str]] = ..., missing_item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetItemRequest(_message.Message):
    __slots__ = ("item_id",)
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    def __init__(self, item_id: _Optional[str] = ...) -> None: ...

class GetItemResponse(_message.Message):
    __slots__ = ("item",)
    ITEM_FIELD_NUMBER: _ClassVar[int]
    item: _common_pb2.Item
    def __init__(self, item: _Optional[_Union[_common_pb2.Item, _Mapping]] = ...) -> None: ...

class GetItemImageRequest(_message.Message):
    __slots__ = ("item_id",)
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    def __init__(self, item_id: _Optional[str] = ...) -> None: ...

class GetItemImageResponse(_message.Message):
    __slots__ = ("image", "content_type", "etag")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    content_type: str
    etag: str
    def __init__(self, image: _Optional[bytes] = ..., content_type: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class ListItemsRequest(_message.Message):
    __slots__ = ("filter", "page_size", "page_token")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    filter: _common_pb2.ItemFilter
    page_size: int
    page_token: str
    def __init__(self, filter: _Optional[_Union[_common_pb2.ItemFilter, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListItemsResponse(_message.Message):
    __slots__ = ("items", "next_page_token")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.Item]
    next_page_token: str
    def __init__(self, items: _Optional[_Iterable[_Union[_common_pb2.Item, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SearchByImageRequest(_message.Message):
    __slots__ = ("image", "filter", "page_size", "page_token", "user_id")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    filter: _common_pb2.ItemFilter
    page_size: int
    page_token: str
    user_id: str
    def __init__(self, image: _Optional[bytes] = ..., filter: _Optional[_Union[_common_pb2.ItemFilter, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class SearchByImageResponse(_message.Message):
    __slots__ = ("results", "next_page_token")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_common_pb2.ScoredItem]
    next_page_token: str
    def __init__(self, results: _Optional[_Iterable[_Union[_common_pb2.ScoredItem, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SearchByTextRequest(_message.Message):
    __slots__ = ("query", "filter", "page_size", "page_token", "user_id")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    query: str
    filter: _common_pb2.ItemFilter
    page_size: int
    page_token: str
    user_id: str
    def __init__(self, query: _Optional[str] = ..., filter: _Optional[_Union[_common_pb2.ItemFilter, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class SearchByTextResponse(_message.Message):
    __slots__ = ("results", "next_page_token")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_common_pb2.ScoredItem]
    next_page_token: str
    def __init__(self, results: _Optional[_Iterable[_Union[_common_pb2.ScoredItem, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetSimilarItemsRequest(_message.Message):
    __slots__ = ("item_id", "filter", "page_size", "page_token", "user_id")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    filter: _common_pb2.ItemFilter
    page_size: int
    page_token: str
    user_id: str
    def __init__(self, item_id: _Optional[str] = ..., filter: _Optional[_Union[_common_pb2.ItemFilter, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class GetSimilarItemsResponse(_message.Message):
    __slots__ = ("results", "next_page_token")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_common_pb2.ScoredItem]
    next_page_token: str
    def __init__(self, results: _Optional[_Iterable[_Union[_common_pb2.ScoredItem, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CompleteOutfitRequest(_message.Message):
    __slots__ = ("item_ids", "wanted_category", "filter", "page_size", "page_token", "user_id")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    WANTED_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    wanted_category: str
    filter: _common_pb2.ItemFilter
    page_size: int
    page_token: str
    user_id: str
    def __init__(self, item_ids: _Optional[_Iterable[str]] = ..., wanted_category: _Optional[str] = ..., filter: _Optional[_Union[_common_pb2.ItemFilter, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class CompleteOutfitResponse(_message.Message):
    __slots__ = ("results", "next_page_token", "method", "fallback_reason")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_common_pb2.ScoredItem]
    next_page_token: str
    method: str
    fallback_reason: str
    def __init__(self, results: _Optional[_Iterable[_Union[_common_pb2.ScoredItem, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., method: _Optional[str] = ..., fallback_reason: _Optional[str] = ...) -> None: ...

class GetRecommendationsRequest(_message.Message):
    __slots__ = ("user_id", "positive_item_ids", "negative_item_ids", "filter", "page_size", "page_token")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    positive_item_ids: _containers.RepeatedScalarFieldContainer[str]
    negative_item_ids: _containers.RepeatedScalarFieldContainer[str]
    filter: _common_pb2.ItemFilter
    page_size: int
    page_token: str
    def __init__(self, user_id: _Optional[str] = ..., positive_item_ids: _Optional[_Iterable[str]] = ..., negative_item_ids: _Optional[_Iterable[str]] = ..., filter: _Optional[_Union[_common_pb2.ItemFilter, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetRecommendationsResponse(_message.Message):
    __slots__ = ("results", "next_page_token")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_common_pb2.ScoredItem]
    next_page_token: str
    def __init__(self, results: _Optional[_Iterable[_Union[_common_pb2.ScoredItem, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RecordInteractionRequest(_message.Message):
    __slots__ = ("user_id", "item_id", "kind", "event_time", "event_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    item_id: str
    kind: _common_pb2.InteractionKind
    event_time: _timestamp_pb2.Timestamp
    event_id: str
    def __init__(self, user_id: _Optional[str] = ..., item_id: _Optional[str] = ..., kind: _Optional[_Union[_common_pb2.InteractionKind, str]] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event_id: _Optional[str] = ...) -> None: ...

class RecordInteractionResponse(_message.Message):
    __slots__ = ("applied",)
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    def __init__(self, applied: _Optional[bool] = ...) -> None: ...

class GetUserStateRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class UserItem(_message.Message):
    __slots__ = ("item_id", "event_time")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    event_time: _timestamp_pb2.Timestamp
    def __init__(self, item_id: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetUserStateResponse(_message.Message):
    __slots__ = ("user_id", "liked_items", "rejected_items", "purchased_items")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    LIKED_ITEMS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_ITEMS_FIELD_NUMBER: _ClassVar[int]
    PURCHASED_ITEMS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    liked_items: _containers.RepeatedCompositeFieldContainer[UserItem]
    rejected_items: _containers.RepeatedCompositeFieldContainer[UserItem]
    purchased_items: _containers.RepeatedCompositeFieldContainer[UserItem]
    def __init__(self, user_id: _Optional[str] = ..., liked_items: _Optional[_Iterable[_Union[UserItem, _Mapping]]] = ..., rejected_items: _Optional[_Iterable[_Union[UserItem, _Mapping]]] = ..., purchased_items: _Optional[_Iterable[_Union[UserItem, _Mapping]]] = ...) -> None: ...

class GetFacetsRequest(_message.Message):
    __slots__ = ("fields", "filter", "max_values")
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    MAX_VALUES_FIELD_NUMBER: _ClassVar[int]
    fields: _containers.RepeatedScalarFieldContainer[str]
    filter: _common_pb2.ItemFilter
    max_values: int
    def __init__(self, fields: _Optional[_Iterable[str]] = ..., filter: _Optional[_Union[_common_pb2.ItemFilter, _Mapping]] = ..., max_values: _Optional[int] = ...) -> None: ...

class FacetValue(_message.Message):
    __slots__ = ("value", "count")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    value: str
    count: int
    def __init__(self, value: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class Facet(_message.Message):
    __slots__ = ("field", "values")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    field: str
    values: _containers.RepeatedCompositeFieldContainer[FacetValue]
    def __init__(self, field: _Optional[str] = ..., values: _Optional[_Iterable[_Union[FacetValue, _Mapping]]] = ...) -> None: ...

class GetFacetsResponse(_message.Message):
    __slots__ = ("facets", "total_items")
    FACETS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ITEMS_FIELD_NUMBER: _ClassVar[int]
    facets: _containers.RepeatedCompositeFieldContainer[Facet]
    total_items: int
    def __init__(self, facets: _Optional[_Iterable[_Union[Facet, _Mapping]]] = ..., total_items: _Optional[int] = ...) -> None: ...
