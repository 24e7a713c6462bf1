from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EpochState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EPOCH_STATE_UNSPECIFIED: _ClassVar[EpochState]
    EPOCH_STATE_OPEN: _ClassVar[EpochState]
    EPOCH_STATE_CLOSING: _ClassVar[EpochState]
    EPOCH_STATE_CLOSED: _ClassVar[EpochState]
EPOCH_STATE_UNSPECIFIED: EpochState
EPOCH_STATE_OPEN: EpochState
EPOCH_STATE_CLOSING: EpochState
EPOCH_STATE_CLOSED: EpochState

class Epoch(_message.Message):
    __slots__ = ("epoch_id", "state", "window_start", "window_end", "leaves_done", "leaves_total", "merkle_root", "total_units")
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    LEAVES_DONE_FIELD_NUMBER: _ClassVar[int]
    LEAVES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    MERKLE_ROOT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_UNITS_FIELD_NUMBER: _ClassVar[int]
    epoch_id: int
    state: EpochState
    window_start: int
    window_end: int
    leaves_done: int
    leaves_total: int
    merkle_root: bytes
    total_units: int
    def __init__(self, epoch_id: _Optional[int] = ..., state: _Optional[_Union[EpochState, str]] = ..., window_start: _Optional[int] = ..., window_end: _Optional[int] = ..., leaves_done: _Optional[int] = ..., leaves_total: _Optional[int] = ..., merkle_root: _Optional[bytes] = ..., total_units: _Optional[int] = ...) -> None: ...

class GetCurrentEpochRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetEpochRequest(_message.Message):
    __slots__ = ("epoch_id",)
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    epoch_id: int
    def __init__(self, epoch_id: _Optional[int] = ...) -> None: ...

class CloseEpochRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetBundleRequest(_message.Message):
    __slots__ = ("epoch_id", "account_id")
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    epoch_id: int
    account_id: bytes
    def __init__(self, epoch_id: _Optional[int] = ..., account_id: _Optional[bytes] = ...) -> None: ...

class GetBundleResponse(_message.Message):
    __slots__ = ("bundle_json",)
    BUNDLE_JSON_FIELD_NUMBER: _ClassVar[int]
    bundle_json: str
    def __init__(self, bundle_json: _Optional[str] = ...) -> None: ...

class AccountBundle(_message.Message):
    __slots__ = ("account_id", "leaves", "total_units", "merkle_root")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    LEAVES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_UNITS_FIELD_NUMBER: _ClassVar[int]
    MERKLE_ROOT_FIELD_NUMBER: _ClassVar[int]
    account_id: bytes
    leaves: int
    total_units: int
    merkle_root: bytes
    def __init__(self, account_id: _Optional[bytes] = ..., leaves: _Optional[int] = ..., total_units: _Optional[int] = ..., merkle_root: _Optional[bytes] = ...) -> None: ...

class ListAccountBundlesRequest(_message.Message):
    __slots__ = ("epoch_id",)
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    epoch_id: int
    def __init__(self, epoch_id: _Optional[int] = ...) -> None: ...

class ListAccountBundlesResponse(_message.Message):
    __slots__ = ("accounts",)
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    accounts: _containers.RepeatedCompositeFieldContainer[AccountBundle]
    def __init__(self, accounts: _Optional[_Iterable[_Union[AccountBundle, _Mapping]]] = ...) -> None: ...

class GetStatementRequest(_message.Message):
    __slots__ = ("epoch_id", "account_id")
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    epoch_id: int
    account_id: bytes
    def __init__(self, epoch_id: _Optional[int] = ..., account_id: _Optional[bytes] = ...) -> None: ...

class GetStatementResponse(_message.Message):
    __slots__ = ("sealed_statement",)
    SEALED_STATEMENT_FIELD_NUMBER: _ClassVar[int]
    sealed_statement: bytes
    def __init__(self, sealed_statement: _Optional[bytes] = ...) -> None: ...

class GetSealedOpeningRequest(_message.Message):
    __slots__ = ("epoch_id", "tag")
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    epoch_id: int
    tag: bytes
    def __init__(self, epoch_id: _Optional[int] = ..., tag: _Optional[bytes] = ...) -> None: ...

class GetSealedOpeningResponse(_message.Message):
    __slots__ = ("sealed_opening",)
    SEALED_OPENING_FIELD_NUMBER: _ClassVar[int]
    sealed_opening: bytes
    def __init__(self, sealed_opening: _Optional[bytes] = ...) -> None: ...

class GetOpeningRequest(_message.Message):
    __slots__ = ("epoch_id", "user_id")
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    epoch_id: int
    user_id: str
    def __init__(self, epoch_id: _Optional[int] = ..., user_id: _Optional[str] = ...) -> None: ...

class GetOpeningResponse(_message.Message):
    __slots__ = ("opening",)
    OPENING_FIELD_NUMBER: _ClassVar[int]
    opening: bytes
    def __init__(self, opening: _Optional[bytes] = ...) -> None: ...
