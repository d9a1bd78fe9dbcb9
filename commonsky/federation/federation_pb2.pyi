from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CRUD(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INVALID: _ClassVar[CRUD]
    CREATE: _ClassVar[CRUD]
    READ: _ClassVar[CRUD]
    UPDATE: _ClassVar[CRUD]
    DELETE: _ClassVar[CRUD]

class BINARY_TYPES(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EMPTY: _ClassVar[BINARY_TYPES]
    OTHER: _ClassVar[BINARY_TYPES]
    IMAGE: _ClassVar[BINARY_TYPES]
INVALID: CRUD
CREATE: CRUD
READ: CRUD
UPDATE: CRUD
DELETE: CRUD
EMPTY: BINARY_TYPES
OTHER: BINARY_TYPES
IMAGE: BINARY_TYPES

class FederatedEvent(_message.Message):
    __slots__ = ("event", "contact", "federate_groups", "federate_provenance", "federate_hops", "federate_group_hop_limits")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    CONTACT_FIELD_NUMBER: _ClassVar[int]
    FEDERATE_GROUPS_FIELD_NUMBER: _ClassVar[int]
    FEDERATE_PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    FEDERATE_HOPS_FIELD_NUMBER: _ClassVar[int]
    FEDERATE_GROUP_HOP_LIMITS_FIELD_NUMBER: _ClassVar[int]
    event: GeoEvent
    contact: ContactListEntry
    federate_groups: _containers.RepeatedScalarFieldContainer[str]
    federate_provenance: _containers.RepeatedCompositeFieldContainer[FederateProvenance]
    federate_hops: FederateHops
    federate_group_hop_limits: FederateGroupHopLimits
    def __init__(self, event: _Optional[_Union[GeoEvent, _Mapping]] = ..., contact: _Optional[_Union[ContactListEntry, _Mapping]] = ..., federate_groups: _Optional[_Iterable[str]] = ..., federate_provenance: _Optional[_Iterable[_Union[FederateProvenance, _Mapping]]] = ..., federate_hops: _Optional[_Union[FederateHops, _Mapping]] = ..., federate_group_hop_limits: _Optional[_Union[FederateGroupHopLimits, _Mapping]] = ...) -> None: ...

class GeoEvent(_message.Message):
    __slots__ = ("send_time", "start_time", "stale_time", "lat", "lon", "hae", "ce", "le", "uid", "type", "coord_source", "other", "battery", "ploc", "palt", "screen_name", "group_name", "group_role", "phone", "speed", "course", "binary", "ptp_uids", "ptp_callsigns", "feed_uid", "mission_names", "access", "caveat", "releaseable_to")
    SEND_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    STALE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAT_FIELD_NUMBER: _ClassVar[int]
    LON_FIELD_NUMBER: _ClassVar[int]
    HAE_FIELD_NUMBER: _ClassVar[int]
    CE_FIELD_NUMBER: _ClassVar[int]
    LE_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    COORD_SOURCE_FIELD_NUMBER: _ClassVar[int]
    OTHER_FIELD_NUMBER: _ClassVar[int]
    BATTERY_FIELD_NUMBER: _ClassVar[int]
    PLOC_FIELD_NUMBER: _ClassVar[int]
    PALT_FIELD_NUMBER: _ClassVar[int]
    SCREEN_NAME_FIELD_NUMBER: _ClassVar[int]
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    GROUP_ROLE_FIELD_NUMBER: _ClassVar[int]
    PHONE_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    COURSE_FIELD_NUMBER: _ClassVar[int]
    BINARY_FIELD_NUMBER: _ClassVar[int]
    PTP_UIDS_FIELD_NUMBER: _ClassVar[int]
    PTP_CALLSIGNS_FIELD_NUMBER: _ClassVar[int]
    FEED_UID_FIELD_NUMBER: _ClassVar[int]
    MISSION_NAMES_FIELD_NUMBER: _ClassVar[int]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    CAVEAT_FIELD_NUMBER: _ClassVar[int]
    RELEASEABLE_TO_FIELD_NUMBER: _ClassVar[int]
    send_time: int
    start_time: int
    stale_time: int
    lat: float
    lon: float
    hae: float
    ce: float
    le: float
    uid: str
    type: str
    coord_source: str
    other: str
    battery: int
    ploc: str
    palt: str
    screen_name: str
    group_name: str
    group_role: str
    phone: str
    speed: float
    course: float
    binary: BinaryBlob
    ptp_uids: _containers.RepeatedScalarFieldContainer[str]
    ptp_callsigns: _containers.RepeatedScalarFieldContainer[str]
    feed_uid: str
    mission_names: _containers.RepeatedScalarFieldContainer[str]
    access: str
    caveat: str
    releaseable_to: str
    def __init__(self, send_time: _Optional[int] = ..., start_time: _Optional[int] = ..., stale_time: _Optional[int] = ..., lat: _Optional[float] = ..., lon: _Optional[float] = ..., hae: _Optional[float] = ..., ce: _Optional[float] = ..., le: _Optional[float] = ..., uid: _Optional[str] = ..., type: _Optional[str] = ..., coord_source: _Optional[str] = ..., other: _Optional[str] = ..., battery: _Optional[int] = ..., ploc: _Optional[str] = ..., palt: _Optional[str] = ..., screen_name: _Optional[str] = ..., group_name: _Optional[str] = ..., group_role: _Optional[str] = ..., phone: _Optional[str] = ..., speed: _Optional[float] = ..., course: _Optional[float] = ..., binary: _Optional[_Union[BinaryBlob, _Mapping]] = ..., ptp_uids: _Optional[_Iterable[str]] = ..., ptp_callsigns: _Optional[_Iterable[str]] = ..., feed_uid: _Optional[str] = ..., mission_names: _Optional[_Iterable[str]] = ..., access: _Optional[str] = ..., caveat: _Optional[str] = ..., releaseable_to: _Optional[str] = ...) -> None: ...

class BinaryBlob(_message.Message):
    __slots__ = ("type", "data", "filename", "timestamp", "description", "federate_provenance", "federate_hops", "federate_group_hop_limits")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    FEDERATE_PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    FEDERATE_HOPS_FIELD_NUMBER: _ClassVar[int]
    FEDERATE_GROUP_HOP_LIMITS_FIELD_NUMBER: _ClassVar[int]
    type: BINARY_TYPES
    data: bytes
    filename: str
    timestamp: int
    description: str
    federate_provenance: _containers.RepeatedCompositeFieldContainer[FederateProvenance]
    federate_hops: FederateHops
    federate_group_hop_limits: FederateGroupHopLimits
    def __init__(self, type: _Optional[_Union[BINARY_TYPES, str]] = ..., data: _Optional[bytes] = ..., filename: _Optional[str] = ..., timestamp: _Optional[int] = ..., description: _Optional[str] = ..., federate_provenance: _Optional[_Iterable[_Union[FederateProvenance, _Mapping]]] = ..., federate_hops: _Optional[_Union[FederateHops, _Mapping]] = ..., federate_group_hop_limits: _Optional[_Union[FederateGroupHopLimits, _Mapping]] = ...) -> None: ...

class ContactListEntry(_message.Message):
    __slots__ = ("operation", "uid", "callsign", "phone", "sip", "direct_connect")
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    CALLSIGN_FIELD_NUMBER: _ClassVar[int]
    PHONE_FIELD_NUMBER: _ClassVar[int]
    SIP_FIELD_NUMBER: _ClassVar[int]
    DIRECT_CONNECT_FIELD_NUMBER: _ClassVar[int]
    operation: CRUD
    uid: str
    callsign: str
    phone: str
    sip: str
    direct_connect: str
    def __init__(self, operation: _Optional[_Union[CRUD, str]] = ..., uid: _Optional[str] = ..., callsign: _Optional[str] = ..., phone: _Optional[str] = ..., sip: _Optional[str] = ..., direct_connect: _Optional[str] = ...) -> None: ...

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Identity(_message.Message):
    __slots__ = ("name", "uid", "description", "type", "server_id")
    class ConnectionType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        FEDERATION_HUB_SERVER: _ClassVar[Identity.ConnectionType]
        FEDERATION_HUB_CLIENT: _ClassVar[Identity.ConnectionType]
        FEDERATION_TAK_SERVER: _ClassVar[Identity.ConnectionType]
        FEDERATION_TAK_CLIENT: _ClassVar[Identity.ConnectionType]
    FEDERATION_HUB_SERVER: Identity.ConnectionType
    FEDERATION_HUB_CLIENT: Identity.ConnectionType
    FEDERATION_TAK_SERVER: Identity.ConnectionType
    FEDERATION_TAK_CLIENT: Identity.ConnectionType
    NAME_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    uid: str
    description: str
    type: Identity.ConnectionType
    server_id: str
    def __init__(self, name: _Optional[str] = ..., uid: _Optional[str] = ..., description: _Optional[str] = ..., type: _Optional[_Union[Identity.ConnectionType, str]] = ..., server_id: _Optional[str] = ...) -> None: ...

class Subscription(_message.Message):
    __slots__ = ("identity", "filter", "version")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    identity: Identity
    filter: str
    version: TakServerVersion
    def __init__(self, identity: _Optional[_Union[Identity, _Mapping]] = ..., filter: _Optional[str] = ..., version: _Optional[_Union[TakServerVersion, _Mapping]] = ...) -> None: ...

class ClientHealth(_message.Message):
    __slots__ = ("status",)
    class ServingStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNKNOWN: _ClassVar[ClientHealth.ServingStatus]
        SERVING: _ClassVar[ClientHealth.ServingStatus]
        NOT_SERVING: _ClassVar[ClientHealth.ServingStatus]
    UNKNOWN: ClientHealth.ServingStatus
    SERVING: ClientHealth.ServingStatus
    NOT_SERVING: ClientHealth.ServingStatus
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: ClientHealth.ServingStatus
    def __init__(self, status: _Optional[_Union[ClientHealth.ServingStatus, str]] = ...) -> None: ...

class ServerHealth(_message.Message):
    __slots__ = ("status",)
    class ServingStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNKNOWN: _ClassVar[ServerHealth.ServingStatus]
        SERVING: _ClassVar[ServerHealth.ServingStatus]
        NOT_SERVING: _ClassVar[ServerHealth.ServingStatus]
        NOT_CONNECTED: _ClassVar[ServerHealth.ServingStatus]
    UNKNOWN: ServerHealth.ServingStatus
    SERVING: ServerHealth.ServingStatus
    NOT_SERVING: ServerHealth.ServingStatus
    NOT_CONNECTED: ServerHealth.ServingStatus
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: ServerHealth.ServingStatus
    def __init__(self, status: _Optional[_Union[ServerHealth.ServingStatus, str]] = ...) -> None: ...

class ROL(_message.Message):
    __slots__ = ("program", "payload", "federate_groups", "federate_provenance", "federate_hops", "federate_group_hop_limits")
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    FEDERATE_GROUPS_FIELD_NUMBER: _ClassVar[int]
    FEDERATE_PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    FEDERATE_HOPS_FIELD_NUMBER: _ClassVar[int]
    FEDERATE_GROUP_HOP_LIMITS_FIELD_NUMBER: _ClassVar[int]
    program: str
    payload: _containers.RepeatedCompositeFieldContainer[BinaryBlob]
    federate_groups: _containers.RepeatedScalarFieldContainer[str]
    federate_provenance: _containers.RepeatedCompositeFieldContainer[FederateProvenance]
    federate_hops: FederateHops
    federate_group_hop_limits: FederateGroupHopLimits
    def __init__(self, program: _Optional[str] = ..., payload: _Optional[_Iterable[_Union[BinaryBlob, _Mapping]]] = ..., federate_groups: _Optional[_Iterable[str]] = ..., federate_provenance: _Optional[_Iterable[_Union[FederateProvenance, _Mapping]]] = ..., federate_hops: _Optional[_Union[FederateHops, _Mapping]] = ..., federate_group_hop_limits: _Optional[_Union[FederateGroupHopLimits, _Mapping]] = ...) -> None: ...

class FederateGroups(_message.Message):
    __slots__ = ("stream_update", "federate_groups", "federate_provenance", "federate_hops", "nested_groups", "federate_group_hop_limits")
    STREAM_UPDATE_FIELD_NUMBER: _ClassVar[int]
    FEDERATE_GROUPS_FIELD_NUMBER: _ClassVar[int]
    FEDERATE_PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    FEDERATE_HOPS_FIELD_NUMBER: _ClassVar[int]
    NESTED_GROUPS_FIELD_NUMBER: _ClassVar[int]
    FEDERATE_GROUP_HOP_LIMITS_FIELD_NUMBER: _ClassVar[int]
    stream_update: ServerHealth
    federate_groups: _containers.RepeatedScalarFieldContainer[str]
    federate_provenance: _containers.RepeatedCompositeFieldContainer[FederateProvenance]
    federate_hops: FederateHops
    nested_groups: _containers.RepeatedCompositeFieldContainer[FederateGroups]
    federate_group_hop_limits: FederateGroupHopLimits
    def __init__(self, stream_update: _Optional[_Union[ServerHealth, _Mapping]] = ..., federate_groups: _Optional[_Iterable[str]] = ..., federate_provenance: _Optional[_Iterable[_Union[FederateProvenance, _Mapping]]] = ..., federate_hops: _Optional[_Union[FederateHops, _Mapping]] = ..., nested_groups: _Optional[_Iterable[_Union[FederateGroups, _Mapping]]] = ..., federate_group_hop_limits: _Optional[_Union[FederateGroupHopLimits, _Mapping]] = ...) -> None: ...

class TakServerVersion(_message.Message):
    __slots__ = ("major", "minor", "patch", "branch", "variant")
    MAJOR_FIELD_NUMBER: _ClassVar[int]
    MINOR_FIELD_NUMBER: _ClassVar[int]
    PATCH_FIELD_NUMBER: _ClassVar[int]
    BRANCH_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    major: int
    minor: int
    patch: int
    branch: str
    variant: str
    def __init__(self, major: _Optional[int] = ..., minor: _Optional[int] = ..., patch: _Optional[int] = ..., branch: _Optional[str] = ..., variant: _Optional[str] = ...) -> None: ...

class FederateProvenance(_message.Message):
    __slots__ = ("federation_server_id", "federation_server_name")
    FEDERATION_SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    FEDERATION_SERVER_NAME_FIELD_NUMBER: _ClassVar[int]
    federation_server_id: str
    federation_server_name: str
    def __init__(self, federation_server_id: _Optional[str] = ..., federation_server_name: _Optional[str] = ...) -> None: ...

class FederateHops(_message.Message):
    __slots__ = ("max_hops", "current_hops")
    MAX_HOPS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_HOPS_FIELD_NUMBER: _ClassVar[int]
    max_hops: int
    current_hops: int
    def __init__(self, max_hops: _Optional[int] = ..., current_hops: _Optional[int] = ...) -> None: ...

class FederateGroupHopLimit(_message.Message):
    __slots__ = ("group_name", "max_hops", "current_hops")
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_HOPS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_HOPS_FIELD_NUMBER: _ClassVar[int]
    group_name: str
    max_hops: int
    current_hops: int
    def __init__(self, group_name: _Optional[str] = ..., max_hops: _Optional[int] = ..., current_hops: _Optional[int] = ...) -> None: ...

class FederateGroupHopLimits(_message.Message):
    __slots__ = ("limits", "use_federate_group_hop_limits")
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    USE_FEDERATE_GROUP_HOP_LIMITS_FIELD_NUMBER: _ClassVar[int]
    limits: _containers.RepeatedCompositeFieldContainer[FederateGroupHopLimit]
    use_federate_group_hop_limits: bool
    def __init__(self, limits: _Optional[_Iterable[_Union[FederateGroupHopLimit, _Mapping]]] = ..., use_federate_group_hop_limits: _Optional[bool] = ...) -> None: ...

class FederateTokenResponse(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...
