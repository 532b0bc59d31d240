"""The one distribution installs every service a lab host starts, so `meshctl up` finds them."""

from __future__ import annotations

import tomllib
from pathlib import Path

from meshmind.lab._services import HOST_SERVICES

ROOT = Path(__file__).resolve().parents[2]


def test_every_host_service_is_a_package_of_the_wheel() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    packaged = {Path(package).name: ROOT / package for package in packages}
    for module in HOST_SERVICES:
        assert module in packaged, f"{module} is not in the wheel's packages"
        assert (packaged[module] / "__main__.py").is_file(), f"{module} cannot run as -m"
