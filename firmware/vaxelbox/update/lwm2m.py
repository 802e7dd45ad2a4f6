"""LwM2M Object 5 (Firmware Update) codes: the state (/5/0/3) and the result (/5/0/5)."""

from enum import IntEnum


class State(IntEnum):  # LwM2M /5/0/3
    IDLE = 0
    DOWNLOADING = 1
    DOWNLOADED = 2
    UPDATING = 3


class Result(IntEnum):  # LwM2M /5/0/5
    INITIAL = 0
    SUCCESS = 1
    NOT_ENOUGH_SPACE = 2
    OUT_OF_MEMORY = 3
    CONNECTION_LOST = 4
    INTEGRITY_FAILURE = 5
    UNSUPPORTED_PACKAGE = 6
    INVALID_URI = 7
    UPDATE_FAILED = 8
    UNSUPPORTED_PROTOCOL = 9
