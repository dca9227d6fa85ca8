"""daxmode: safe dax device mode management and famfs bring-up for shared CXL memory."""

__version__ = "0.1.0"
