"""Home Panel: one backend between a home-lab dashboard and the services it shows."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("homepanel")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
