"""Vaxelbox: the on-device agent of the office edge appliance."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vaxelbox")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0+unknown"
