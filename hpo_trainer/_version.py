"""The installed version of hpo-trainer (kept apart so any module can read it cheaply)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hpo-trainer")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
