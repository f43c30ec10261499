"""Map the design card's folders onto the namespaced import names.

services/ is the `onefunnel` package (its subfolders are onefunnel.ingest, onefunnel.sync,
onefunnel.metrics) and shared/ is `onefunnel.shared`. Everything else is in pyproject.toml.
"""

from setuptools import find_namespace_packages, setup

# Namespace packages too: the folders that hold only data (migration versions, JSON Schemas) are
# importable, and setuptools warns it will stop shipping them unless they are listed.
_NOT_PACKAGES = ["*__pycache__*"]
packages = ["onefunnel", "onefunnel.shared"]
packages += [f"onefunnel.{name}" for name in find_namespace_packages("services", exclude=_NOT_PACKAGES)]
packages += [f"onefunnel.shared.{name}" for name in find_namespace_packages("shared", exclude=_NOT_PACKAGES)]

setup(packages=packages)
