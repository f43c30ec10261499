"""Map the design card's folders onto the namespaced import names.

services/ is the `onefunnel` package (its subfolders are onefunnel.ingest, onefunnel.sync,
onefunnel.metrics) and shared/ is `onefunnel.shared`. Everything else is in pyproject.toml.
"""

from setuptools import find_packages, setup

packages = ["onefunnel", "onefunnel.shared"]
packages += [f"onefunnel.{name}" for name in find_packages("services")]
packages += [f"onefunnel.shared.{name}" for name in find_packages("shared")]

setup(packages=packages)
