"""Triton's system shared memory extension: regions a same-host client registers, tensors read from
and written to them in place.

A client creates a POSIX shared memory object (``/dev/shm/KEY``), registers a window of it (offset,
byte size) under a region name, then names the region in an input's or requested output's
parameters (``shared_memory_region``, ``shared_memory_byte_size``, optional
``shared_memory_offset``): the tensor never travels over the socket. Inputs become numpy views over
the mapping (no copy; the runner hands a writable view straight to torch), outputs are copied into
it.

Every bound is checked before memory is touched, by pure functions unit-tested without a server:
a request names a range inside its region, a region lies inside its object, and the object still
has that size when it is read or written (a client that shrank it would otherwise make the mapping
fault). Bad input is a 400 and changes nothing.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelplane.serving.runtime.datatypes import NUMPY_DTYPES
from modelplane.serving.runtime.errors import bad_request

#: Where Linux keeps POSIX shared memory objects (``shm_open(KEY)`` opens ``/dev/shm/KEY``).
SHM_DIR = Path("/dev/shm")  # noqa: S108 (not a temporary file: the POSIX shared memory namespace)
#: The request parameters that place a tensor in shared memory (Triton's names).
REGION, BYTE_SIZE, OFFSET = "shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"
CUDA_UNAVAILABLE = (
    "CUDA shared memory is not available on this server; use system shared memory "
    "(v2/systemsharedmemory) instead"
)


@dataclass(frozen=True, slots=True)
class TensorPlace:
    """Where a request says a tensor lies: ``byte_size`` bytes at ``offset`` in region ``region``."""

    region: str
    offset: int
    byte_size: int


@dataclass(frozen=True, slots=True)
class RegionStatus:
    """A registered region as the status calls report it."""

    name: str
    key: str
    offset: int
    byte_size: int

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "key": self.key, "offset": self.offset, "byte_size": self.byte_size}


def _non_negative_int(what: str, field: str, value: object) -> int:
    if type(value) is not int or value < 0:
        raise bad_request(f"{what}: {field} must be a non-negative integer, got {value!r}")
    return value


def tensor_place(what: str, params: Mapping[str, Any]) -> TensorPlace | None:
    """The shared memory place named by a tensor's parameters, or ``None`` when it names none.

    ``what`` names the tensor in errors (``input 'X'``). Region and byte size come together or not
    at all, as the protocol says.
    """
    region = params.get(REGION)
    size = params.get(BYTE_SIZE)
    offset = params.get(OFFSET)
    if region is None:
        if size is not None or offset is not None:
            raise bad_request(f"{what}: {BYTE_SIZE} and {OFFSET} need {REGION} as well")
        return None
    if not isinstance(region, str) or not region:
        raise bad_request(f"{what}: {REGION} must be a non-empty string")
    if size is None:
        raise bad_request(f"{what}: {REGION} needs {BYTE_SIZE} as well")
    return TensorPlace(
        region,
        _non_negative_int(what, OFFSET, 0 if offset is None else offset),
        _non_negative_int(what, BYTE_SIZE, size),
    )


def check_range(what: str, region: str, region_size: int, offset: int, byte_size: int) -> None:
    """Refuse a range that does not lie wholly inside a region of ``region_size`` bytes."""
    if offset > region_size or byte_size > region_size - offset:
        raise bad_request(
            f"{what}: {byte_size} bytes at offset {offset} do not fit in shared memory region "
            f"{region!r} of {region_size} bytes"
        )


def tensor_bytes(datatype: str, shape: tuple[int, ...]) -> int:
    """Bytes a tensor of ``datatype`` and ``shape`` takes, packed (its shared memory byte size)."""
    return math.prod(shape) * NUMPY_DTYPES[datatype].itemsize


def check_input_size(what: str, datatype: str, shape: tuple[int, ...], byte_size: int) -> None:
    """An input's shared memory byte size must be exactly what its shape and datatype take."""
    needed = tensor_bytes(datatype, shape)
    if byte_size != needed:
        raise bad_request(
            f"{what}: shape {list(shape)} of {datatype} needs {needed} bytes, {BYTE_SIZE} is {byte_size}"
        )


def check_output_size(what: str, needed: int, byte_size: int) -> None:
    """An output's shared memory byte size must hold it (its shape is known only after the forward,
    so a client may reserve more, as Triton allows)."""
    if byte_size < needed:
        raise bad_request(
            f"{what}: the result takes {needed} bytes, more than its {BYTE_SIZE} of {byte_size}"
        )


def shm_file_name(key: object) -> str:
    """The file name under :data:`SHM_DIR` for a key (``/name`` or ``name``, as ``shm_open`` takes).

    Refuses keys that would name anything else (``..``, a path with ``/`` inside, NUL).
    """
    if not isinstance(key, str):
        raise bad_request(f"shared memory key must be a string, got {key!r}")
    name = key.lstrip("/")
    if not name or name in (".", "..") or "/" in name or "\0" in name or len(name.encode()) > 255:
        raise bad_request(f"shared memory key {key!r} is not a valid POSIX shared memory name ('/name')")
    return name


def check_register(name: str, key: object, offset: object, byte_size: object) -> tuple[RegionStatus, str]:
    """Validate a register request's fields; returns the region to be and its file name."""
    if not isinstance(name, str) or not name:
        raise bad_request("a shared memory region needs a non-empty name")
    file_name = shm_file_name(key)
    what = f"shared memory region {name!r}"
    start = _non_negative_int(what, "offset", offset)
    size = _non_negative_int(what, "byte_size", byte_size)
    if size == 0:
        raise bad_request(f"{what}: byte_size must be positive")
    return RegionStatus(name, str(key), start, size), file_name


def check_object_size(status: RegionStatus, object_size: int) -> None:
    """A region must lie inside its shared memory object (past its end, a mapping faults)."""
    if status.offset > object_size or status.byte_size > object_size - status.offset:
        raise bad_request(
            f"shared memory region {status.name!r}: {status.byte_size} bytes at offset {status.offset} "
            f"do not fit in shared memory key {status.key!r} of {object_size} bytes"
        )


class Region:
    """One registered region: its object's descriptor and a mapping of its window."""

    def __init__(self, status: RegionStatus, fd: int, mapping: mmap.mmap, start: int) -> None:
        self.status = status
        self.fd = fd
        self.mapping = mapping
        #: Where the region starts in ``mapping`` (mappings start on a page boundary).
        self.start = start

    def check_object(self, what: str) -> None:
        """The object must still hold the region: touching a mapping past its end faults the server."""
        end = self.status.offset + self.status.byte_size
        size = os.fstat(self.fd).st_size
        if size < end:
            raise bad_request(
                f"{what}: shared memory key {self.status.key!r} shrank to {size} bytes; "
                f"region {self.status.name!r} needs {end}"
            )

    def close(self) -> None:
        os.close(self.fd)
        # A request may still hold a view (an input the model is reading): then the mapping is
        # unmapped when the last view goes; the region is gone for every new request at once.
        with contextlib.suppress(BufferError):
            self.mapping.close()


class SharedMemoryRegistry:
    """The registered system shared memory regions of one server (both front ends share it)."""

    def __init__(self, shm_dir: Path = SHM_DIR) -> None:
        self.shm_dir = shm_dir
        self._regions: dict[str, Region] = {}

    def register(self, name: str, key: object, offset: object, byte_size: object) -> RegionStatus:
        status, file_name = check_register(name, key, offset, byte_size)
        if name in self._regions:
            raise bad_request(f"shared memory region {name!r} is already registered; unregister it first")
        what = f"shared memory region {name!r}"
        try:
            fd = os.open(self.shm_dir / file_name, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise bad_request(f"{what}: cannot open shared memory key {key!r}: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise bad_request(f"{what}: shared memory key {key!r} is not a shared memory object")
            check_object_size(status, info.st_size)
            start = status.offset % mmap.ALLOCATIONGRANULARITY
            mapping = mmap.mmap(fd, start + status.byte_size, offset=status.offset - start)
        except BaseException:
            os.close(fd)
            raise
        self._regions[name] = Region(status, fd, mapping, start)
        return status

    def unregister(self, name: str = "") -> None:
        """Unregister one region (``""``: all). An unknown name is no error, as in Triton, so that
        clients can clean up unconditionally."""
        names = list(self._regions) if name == "" else [name]
        for each in names:
            region = self._regions.pop(each, None)
            if region is not None:
                region.close()

    def close(self) -> None:
        """Server shutdown: unregister everything."""
        self.unregister()

    def status(self, name: str = "") -> list[RegionStatus]:
        if name == "":
            return [r.status for r in self._regions.values()]
        return [self._region(name, "system shared memory status").status]

    def _region(self, name: str, what: str) -> Region:
        region = self._regions.get(name)
        if region is None:
            raise bad_request(f"{what}: unknown shared memory region {name!r}; register it first")
        return region

    def check(self, what: str, place: TensorPlace, needed: int = 0) -> None:
        """The place names a registered region, lies inside it and holds ``needed`` bytes (checked
        again at use)."""
        region = self._region(place.region, what)
        check_range(what, place.region, region.status.byte_size, place.offset, place.byte_size)
        check_output_size(what, needed, place.byte_size)

    def read(
        self, what: str, place: TensorPlace, datatype: str, shape: tuple[int, ...]
    ) -> np.ndarray[Any, Any]:
        """An input tensor: a view of ``shape`` over the region (no copy)."""
        region = self._region(place.region, what)
        check_range(what, place.region, region.status.byte_size, place.offset, place.byte_size)
        check_input_size(what, datatype, shape, place.byte_size)
        region.check_object(what)
        dtype = NUMPY_DTYPES[datatype]
        count = place.byte_size // dtype.itemsize
        array = np.frombuffer(region.mapping, dtype=dtype, count=count, offset=region.start + place.offset)
        return array.reshape(shape)

    def write(self, what: str, place: TensorPlace, array: np.ndarray[Any, Any]) -> None:
        """Copy an output tensor into its place (packed, C order, as the client reads it back)."""
        self.check(what, place, array.nbytes)
        region = self._regions[place.region]
        region.check_object(what)
        target = np.frombuffer(
            region.mapping, dtype=array.dtype, count=array.size, offset=region.start + place.offset
        )
        np.copyto(target.reshape(array.shape), array)
