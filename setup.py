"""Where the installed packages come from (the metadata is in pyproject.toml).

The repository keeps ``app/``, ``uda_core/`` and ``resources/`` at its top (DESIGN.md); what a
wheel installs must not be a bare ``app`` or ``resources`` package, so they are installed as
``uda_studio`` (the Qt + napari GUI) and ``uda_core._resources`` (demo models, demo data, the
template, with their notices), found at run time through ``importlib.resources``.
"""

from setuptools import find_packages, setup

RENAMED = {"app": "uda_studio", "resources": "uda_core._resources"}


def installed_packages() -> list[str]:
    names = find_packages(include=["uda_core", "uda_core.*"])
    names += ["uda_studio"] + ["uda_studio." + p for p in find_packages("app")]
    names += ["uda_core._resources"]
    return names


setup(
    packages=installed_packages(),
    package_dir={"uda_studio": "app", "uda_core._resources": "resources"},
    package_data={
        "uda_core": ["py.typed"],
        "uda_studio": ["napari.yaml", "icons/*"],
        "uda_core._resources": ["*.md", "*.txt", "*.json", "**/*.md", "**/*.txt", "**/*.json",
                                "**/*.nii.gz", "**/*.pt"],
    },
    include_package_data=False,
)
