"""nhl: multi-length deep supervised hashing with the Nested Hash Layer."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nhl")  # one source of truth: [project] version in pyproject.toml
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
