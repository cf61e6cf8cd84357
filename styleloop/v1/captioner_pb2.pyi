from styleloop.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CaptionImagesRequest(_message.Message):
    __slots__ = ("images", "prompt", "max_new_tokens")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    prompt: str
    max_new_tokens: int
    def __init__(self, images: _Optional[_Iterable[bytes]] = ..., prompt: _Optional[str] = ..., max_new_tokens: _Optional[int] = ...) -> None: ...

class CaptionAttribute(_message.Message):
    __slots__ = ("name", "value", "confidence")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    confidence: float
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ..., confidence: _Optional[float] = ...) -> None: ...

class Caption(_message.Message):
    __slots__ = ("text", "attributes", "generated_tokens")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    text: str
    attributes: _containers.RepeatedCompositeFieldContainer[CaptionAttribute]
    generated_tokens: int
    def __init__(self, text: _Optional[str] = ..., attributes: _Optional[_Iterable[_Union[CaptionAttribute, _Mapping]]] = ..., generated_tokens: _Optional[int] = ...) -> None: ...

class CaptionResult(_message.Message):
    __slots__ = ("caption", "error")
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    caption: Caption
    error: _common_pb2.ItemError
    def __init__(self, caption: _Optional[_Union[Caption, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.ItemError, _Mapping]] = ...) -> None: ...

class CaptionImagesResponse(_message.Message):
    __slots__ = ("model_id", "model_version", "results")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    model_version: str
    results: _containers.RepeatedCompositeFieldContainer[CaptionResult]
    def __init__(self, model_id: _Optional[str] = ..., model_version: _Optional[str] = ..., results: _Optional[_Iterable[_Union[CaptionResult, _Mapping]]] = ...) -> None: ...

class GetCaptionerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCaptionerInfoResponse(_message.Message):
    __slots__ = ("model", "default_prompt")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PROMPT_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelInfo
    default_prompt: str
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., default_prompt: _Optional[str] = ...) -> None: ...
