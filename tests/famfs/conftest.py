"""Fixtures for famfs tests: sparse image files standing in for dax devices."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daxmode.famfs import Volume, mkfs
from daxmode.fsdev import Mapping, create_image, map_image

GiB = 1 << 30
MiB = 1 << 20


@pytest.fixture
def me() -> uuid.UUID:
    return uuid.UUID("11111111-2222-4333-8444-555555555555")


@pytest.fixture
def image(tmp_path: Path) -> Path:
    p = tmp_path / "dev.img"
    create_image(p, 1 * GiB)
    return p


@pytest.fixture
def medium(image: Path) -> Iterator[Mapping]:
    with map_image(image) as m:
        yield m


@pytest.fixture
def vol(medium: Mapping, me: uuid.UUID) -> Iterator[Volume]:
    mkfs(medium, me)
    v = Volume(medium, me)
    yield v
    v.close()
