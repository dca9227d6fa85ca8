"""Builds the optional native cache-flush helper; all other metadata lives in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("daxmode._cacheflush", ["daxmode/_cacheflush.c"], optional=True)])
