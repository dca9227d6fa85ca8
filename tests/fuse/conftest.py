"""Fixtures for the FUSE tests: a formatted famfs image, and helpers that play the kernel's part."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fuseworld import ME, MiB

from daxmode.famfs import Volume, mkfs
from daxmode.fsdev import Mapping, create_image, map_image


@pytest.fixture
def img(tmp_path: Path) -> Path:
    p = tmp_path / "dev.img"
    create_image(p, 256 * MiB)
    return p


@pytest.fixture
def medium(img: Path) -> Iterator[Mapping]:
    with map_image(img) as m:
        yield m


@pytest.fixture
def vol(medium: Mapping) -> Iterator[Volume]:
    mkfs(medium, ME)
    v = Volume(medium, ME)
    yield v
    v.close()
