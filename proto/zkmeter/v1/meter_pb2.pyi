from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AccountStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCOUNT_STATUS_UNSPECIFIED: _ClassVar[AccountStatus]
    ACCOUNT_STATUS_OPEN: _ClassVar[AccountStatus]
    ACCOUNT_STATUS_CLOSED: _ClassVar[AccountStatus]
ACCOUNT_STATUS_UNSPECIFIED: AccountStatus
ACCOUNT_STATUS_OPEN: AccountStatus
ACCOUNT_STATUS_CLOSED: AccountStatus

class ChatMessage(_message.Message):
    __slots__ = ("role", "content", "name")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    name: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class TextUsage(_message.Message):
    __slots__ = ("messages", "completion")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    completion: str
    def __init__(self, messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., completion: _Optional[str] = ...) -> None: ...

class ReportedCounts(_message.Message):
    __slots__ = ("input_tokens", "output_tokens")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ...) -> None: ...

class HiddenCounts(_message.Message):
    __slots__ = ("cached_input_tokens", "reasoning_tokens")
    CACHED_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    cached_input_tokens: int
    reasoning_tokens: int
    def __init__(self, cached_input_tokens: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ...) -> None: ...

class RecordUsageRequest(_message.Message):
    __slots__ = ("idempotency_key", "user_id", "model", "text", "counts", "hidden")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    user_id: str
    model: str
    text: TextUsage
    counts: ReportedCounts
    hidden: HiddenCounts
    def __init__(self, idempotency_key: _Optional[str] = ..., user_id: _Optional[str] = ..., model: _Optional[str] = ..., text: _Optional[_Union[TextUsage, _Mapping]] = ..., counts: _Optional[_Union[ReportedCounts, _Mapping]] = ..., hidden: _Optional[_Union[HiddenCounts, _Mapping]] = ...) -> None: ...

class Receipt(_message.Message):
    __slots__ = ("encoded", "signature", "receipt_hash", "epoch_id", "sequence", "units", "running_total", "input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens", "encoding")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_HASH_FIELD_NUMBER: _ClassVar[int]
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_TOTAL_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    signature: bytes
    receipt_hash: bytes
    epoch_id: int
    sequence: int
    units: int
    running_total: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    reasoning_tokens: int
    encoding: str
    def __init__(self, encoded: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., receipt_hash: _Optional[bytes] = ..., epoch_id: _Optional[int] = ..., sequence: _Optional[int] = ..., units: _Optional[int] = ..., running_total: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cached_input_tokens: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ..., encoding: _Optional[str] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ("code", "message", "field", "reason", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    field: str
    reason: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., field: _Optional[str] = ..., reason: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RecordUsageResponse(_message.Message):
    __slots__ = ("receipt", "replayed", "error")
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    receipt: Receipt
    replayed: bool
    error: ItemError
    def __init__(self, receipt: _Optional[_Union[Receipt, _Mapping]] = ..., replayed: _Optional[bool] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ...) -> None: ...

class ListReceiptsRequest(_message.Message):
    __slots__ = ("user_id", "epoch_id", "idempotency_key")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    epoch_id: int
    idempotency_key: str
    def __init__(self, user_id: _Optional[str] = ..., epoch_id: _Optional[int] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class ListReceiptsResponse(_message.Message):
    __slots__ = ("receipts",)
    RECEIPTS_FIELD_NUMBER: _ClassVar[int]
    receipts: _containers.RepeatedCompositeFieldContainer[Receipt]
    def __init__(self, receipts: _Optional[_Iterable[_Union[Receipt, _Mapping]]] = ...) -> None: ...

class RegisterUserRequest(_message.Message):
    __slots__ = ("user_id", "account_id", "x25519_public_key")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    X25519_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    account_id: bytes
    x25519_public_key: bytes
    def __init__(self, user_id: _Optional[str] = ..., account_id: _Optional[bytes] = ..., x25519_public_key: _Optional[bytes] = ...) -> None: ...

class RegisterUserResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RegisterUserKeyRequest(_message.Message):
    __slots__ = ("user_id", "x25519_public_key")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    X25519_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    x25519_public_key: bytes
    def __init__(self, user_id: _Optional[str] = ..., x25519_public_key: _Optional[bytes] = ...) -> None: ...

class RegisterUserKeyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RotateUserKeyRequest(_message.Message):
    __slots__ = ("user_id", "x25519_public_key")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    X25519_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    x25519_public_key: bytes
    def __init__(self, user_id: _Optional[str] = ..., x25519_public_key: _Optional[bytes] = ...) -> None: ...

class RotateUserKeyResponse(_message.Message):
    __slots__ = ("effective_epoch_id",)
    EFFECTIVE_EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    effective_epoch_id: int
    def __init__(self, effective_epoch_id: _Optional[int] = ...) -> None: ...

class Account(_message.Message):
    __slots__ = ("account_id", "payer", "asset", "payer_x25519_public_key", "status")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PAYER_FIELD_NUMBER: _ClassVar[int]
    ASSET_FIELD_NUMBER: _ClassVar[int]
    PAYER_X25519_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    account_id: bytes
    payer: bytes
    asset: bytes
    payer_x25519_public_key: bytes
    status: AccountStatus
    def __init__(self, account_id: _Optional[bytes] = ..., payer: _Optional[bytes] = ..., asset: _Optional[bytes] = ..., payer_x25519_public_key: _Optional[bytes] = ..., status: _Optional[_Union[AccountStatus, str]] = ...) -> None: ...

class RegisterAccountRequest(_message.Message):
    __slots__ = ("payer", "asset", "payer_x25519_public_key")
    PAYER_FIELD_NUMBER: _ClassVar[int]
    ASSET_FIELD_NUMBER: _ClassVar[int]
    PAYER_X25519_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    payer: bytes
    asset: bytes
    payer_x25519_public_key: bytes
    def __init__(self, payer: _Optional[bytes] = ..., asset: _Optional[bytes] = ..., payer_x25519_public_key: _Optional[bytes] = ...) -> None: ...

class GetAccountRequest(_message.Message):
    __slots__ = ("account_id",)
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: bytes
    def __init__(self, account_id: _Optional[bytes] = ...) -> None: ...

class CloseAccountRequest(_message.Message):
    __slots__ = ("account_id",)
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: bytes
    def __init__(self, account_id: _Optional[bytes] = ...) -> None: ...
