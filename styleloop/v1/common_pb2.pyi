import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InteractionKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INTERACTION_KIND_UNSPECIFIED: _ClassVar[InteractionKind]
    INTERACTION_KIND_IMPRESSION: _ClassVar[InteractionKind]
    INTERACTION_KIND_CLICK: _ClassVar[InteractionKind]
    INTERACTION_KIND_LIKE: _ClassVar[InteractionKind]
    INTERACTION_KIND_REJECT: _ClassVar[InteractionKind]
    INTERACTION_KIND_PURCHASE: _ClassVar[InteractionKind]
INTERACTION_KIND_UNSPECIFIED: InteractionKind
INTERACTION_KIND_IMPRESSION: InteractionKind
INTERACTION_KIND_CLICK: InteractionKind
INTERACTION_KIND_LIKE: InteractionKind
INTERACTION_KIND_REJECT: InteractionKind
INTERACTION_KIND_PURCHASE: InteractionKind

class ItemError(_message.Message):
    __slots__ = ("reason", "message")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    reason: str
    message: str
    def __init__(self, reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model_id", "model_version", "preset", "backend", "device", "image_dimension", "text_dimension", "max_batch_size", "max_text_tokens", "shared_space")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DIMENSION_FIELD_NUMBER: _ClassVar[int]
    TEXT_DIMENSION_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SHARED_SPACE_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    model_version: str
    preset: str
    backend: str
    device: str
    image_dimension: int
    text_dimension: int
    max_batch_size: int
    max_text_tokens: int
    shared_space: bool
    def __init__(self, model_id: _Optional[str] = ..., model_version: _Optional[str] = ..., preset: _Optional[str] = ..., backend: _Optional[str] = ..., device: _Optional[str] = ..., image_dimension: _Optional[int] = ..., text_dimension: _Optional[int] = ..., max_batch_size: _Optional[int] = ..., max_text_tokens: _Optional[int] = ..., shared_space: _Optional[bool] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("item_id", "title", "description", "brand", "category", "article_type", "colour", "season", "usage", "gender", "price", "currency_code", "in_stock", "image_uri", "caption", "attributes", "create_time", "update_time", "year")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    BRAND_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    ARTICLE_TYPE_FIELD_NUMBER: _ClassVar[int]
    COLOUR_FIELD_NUMBER: _ClassVar[int]
    SEASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    GENDER_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    IN_STOCK_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URI_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    YEAR_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    title: str
    description: str
    brand: str
    category: str
    article_type: str
    colour: str
    season: str
    usage: str
    gender: str
    price: float
    currency_code: str
    in_stock: bool
    image_uri: str
    caption: str
    attributes: _containers.ScalarMap[str, str]
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    year: str
    def __init__(self, item_id: _Optional[str] = ..., title: _Optional[str] = ..., description: _Optional[str] = ..., brand: _Optional[str] = ..., category: _Optional[str] = ..., article_type: _Optional[str] = ..., colour: _Optional[str] = ..., season: _Optional[str] = ..., usage: _Optional[str] = ..., gender: _Optional[str] = ..., price: _Optional[float] = ..., currency_code: _Optional[str] = ..., in_stock: _Optional[bool] = ..., image_uri: _Optional[str] = ..., caption: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., year: _Optional[str] = ...) -> None: ...

class PriceRange(_message.Message):
    __slots__ = ("min_price", "max_price")
    MIN_PRICE_FIELD_NUMBER: _ClassVar[int]
    MAX_PRICE_FIELD_NUMBER: _ClassVar[int]
    min_price: float
    max_price: float
    def __init__(self, min_price: _Optional[float] = ..., max_price: _Optional[float] = ...) -> None: ...

class ItemFilter(_message.Message):
    __slots__ = ("categories", "article_types", "brands", "seasons", "colours", "usages", "genders", "price_range", "in_stock_only", "excluded_item_ids", "years")
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    ARTICLE_TYPES_FIELD_NUMBER: _ClassVar[int]
    BRANDS_FIELD_NUMBER: _ClassVar[int]
    SEASONS_FIELD_NUMBER: _ClassVar[int]
    COLOURS_FIELD_NUMBER: _ClassVar[int]
    USAGES_FIELD_NUMBER: _ClassVar[int]
    GENDERS_FIELD_NUMBER: _ClassVar[int]
    PRICE_RANGE_FIELD_NUMBER: _ClassVar[int]
    IN_STOCK_ONLY_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    YEARS_FIELD_NUMBER: _ClassVar[int]
    categories: _containers.RepeatedScalarFieldContainer[str]
    article_types: _containers.RepeatedScalarFieldContainer[str]
    brands: _containers.RepeatedScalarFieldContainer[str]
    seasons: _containers.RepeatedScalarFieldContainer[str]
    colours: _containers.RepeatedScalarFieldContainer[str]
    usages: _containers.RepeatedScalarFieldContainer[str]
    genders: _containers.RepeatedScalarFieldContainer[str]
    price_range: PriceRange
    in_stock_only: bool
    excluded_item_ids: _containers.RepeatedScalarFieldContainer[str]
    years: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, categories: _Optional[_Iterable[str]] = ..., article_types: _Optional[_Iterable[str]] = ..., brands: _Optional[_Iterable[str]] = ..., seasons: _Optional[_Iterable[str]] = ..., colours: _Optional[_Iterable[str]] = ..., usages: _Optional[_Iterable[str]] = ..., genders: _Optional[_Iterable[str]] = ..., price_range: _Optional[_Union[PriceRange, _Mapping]] = ..., in_stock_only: _Optional[bool] = ..., excluded_item_ids: _Optional[_Iterable[str]] = ..., years: _Optional[_Iterable[str]] = ...) -> None: ...

class ScoredItem(_message.Message):
    __slots__ = ("item", "score", "similarity")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    item: Item
    score: float
    similarity: float
    def __init__(self, item: _Optional[_Union[Item, _Mapping]] = ..., score: _Optional[float] = ..., similarity: _Optional[float] = ...) -> None: ...
