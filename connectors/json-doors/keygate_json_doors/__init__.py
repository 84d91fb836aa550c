"""json-doors: Keygate's reference access-system connector, with its whole site in one JSON file."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("keygate-json-doors")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0.0.0"
